#!/usr/bin/env bash
# One-command verification of ftmed's Lightning path on one CUDA GPU, inside a fixed wall-time budget.
#
#   bash scripts/gpu_check.sh            # from the checkout root; results in $OUT or ./gpu_check_out
#
# Needs: python3 with torch (CUDA) and lightning; no TensorFlow. Packages it lacks among the CLI's
# dependencies are installed from the wheels in gpu_wheels/ (docs/gpu.md: one download command) with
# `pip install --no-deps --target` into a folder on PYTHONPATH. Only modules the machine lacks are
# installed, so nothing it has is shadowed -- except typer and typing_extensions where the machine's are
# older than the CLI and pydantic need (the log says so). A failed optional install skips only its stage.
#
# Budget: FTMED_CHECK_BUDGET seconds (default 470) for the whole script. Every stage runs under
# min(its own limit, the time left), whatever an earlier stage did; a stage that no longer fits is
# recorded as skipped. The summary JSON is rewritten after every stage, so a check cut off from outside
# still leaves the stages it finished, and a `timeout` around the whole script backs the budget up.
#
# Output ($OUT, flat, 4 files): gpu_check.log (everything printed), gpu_check.json (every stage with its
# verdict and seconds, every figure), gpu_speed.json (benchmarks/gpu_speed.py), records.tar.gz (the runs'
# record.json files, comparison tables and logs; no checkpoints). Work files stay in $FTMED_GPU_DATA.
#
# Stages (required first, optional last):
#   1 environment   card, driver, versions; install what is missing (required wheels)
#   2 data          a PathMNIST-sized synthetic file (89,996 train rows) and a 5 %-scale one
#   3 device        scripts/gpu_checks.py (fast vs plain max |d|, eager vs graph bitwise, same seed twice
#                   bitwise) and the CUDA tests of tests/test_lightning_fast.py
#   4 benchmark     benchmarks/gpu_speed.py: ftmed fast/plain vs the eager and CUDA-graph hand loops
#   5 study         the Lightning half of the study: 5 variants x 3 seeds x 20 epochs, wall time
#   6 determinism   `ftmed train` of the study's baseline seed 0 again: test logits bitwise equal
#   7 keras-jax     optional: `train -f keras[jax] --accelerator gpu`, 1 epoch (skipped without jax or
#                   without keras and its wheels)
#   8 224px         optional: `compare --size 224` on the GPU: s/epoch, path, peak card memory
#
# A dry run of the whole plumbing on a CPU machine (small; tests/test_gpu_check_script.py runs it):
#   FTMED_CHECK_ACCELERATOR=cpu FTMED_CHECK_SCALE=0.02 FTMED_CHECK_EPOCHS=1 FTMED_CHECK_SEEDS=0 \
#   FTMED_CHECK_BENCH_MODELS=baseline FTMED_CHECK_224_SCALE=0.002 bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
BUDGET=${FTMED_CHECK_BUDGET:-470}
if [ -z "${FTMED_CHECK_INNER:-}" ]; then  # the backstop: the budget plus the summary's reserve
  FTMED_CHECK_INNER=1 exec timeout --kill-after=5 "$((BUDGET + 20))" bash "$0" "$@"
fi
START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=10  # seconds kept back for the summary and the tarball
ACCEL=${FTMED_CHECK_ACCELERATOR:-gpu}
SCALE=${FTMED_CHECK_SCALE:-1.0}
STUDY_EPOCHS=${FTMED_CHECK_EPOCHS:-20}
STUDY_SEEDS=${FTMED_CHECK_SEEDS:-0,1,2}
BENCH_MODELS=${FTMED_CHECK_BENCH_MODELS:-baseline,wider-deeper}
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
WORK=${FTMED_GPU_DATA:-/tmp/ftmed_gpu_check}
RUNS=$WORK/runs       # run directories (checkpoints: large) stay here
FIG=$WORK/figures     # one JSON per stage's figures, merged into the summary
DEPS=$WORK/deps       # wheels installed with --target
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
rm -rf "$RUNS" "$FIG"  # a rerun must not reuse finished runs (the study is timed)
mkdir -p "$RUNS" "$FIG"
: > "$WORK/stages.tsv"
LOG=$OUT/gpu_check.log
: > "$LOG"
# $DEPS holds only what the machine lacked (install_wheels), so it shadows nothing it already had.
export PYTHONPATH=$ROOT:$DEPS${PYTHONPATH:+:$PYTHONPATH}
export FTMED_DATA_DIR=$WORK PYTHONUNBUFFERED=1
export ROOT OUT WORK RUNS FIG DEPS PY ACCEL SCALE STUDY_EPOCHS STUDY_SEEDS BENCH_MODELS BUDGET START
exec > >(tee -a "$LOG") 2>&1

summary() {  # gpu_check.json from stages.tsv and figures/*.json (stdlib only: works before any install)
  "$PY" - "$@" <<'EOF' || echo "summary: could not be written"
import glob, json, os, subprocess, sys, time
work, out = os.environ["WORK"], os.environ["OUT"]
stages = []
for line in open(os.path.join(work, "stages.tsv")):
    name, verdict, rc, seconds, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    stages.append({"stage": name, "verdict": verdict, "exit_code": int(rc) if rc.lstrip("-").isdigit() else None,
                   "seconds": float(seconds) if seconds else None, "note": note})
figures = {}
for path in sorted(glob.glob(os.path.join(work, "figures", "*.json"))):
    try:
        figures[os.path.basename(path)[:-5]] = json.load(open(path))
    except ValueError as exc:
        figures[os.path.basename(path)[:-5]] = {"unreadable": str(exc)}
final = len(sys.argv) > 1 and sys.argv[1] == "final"
required = [s for s in stages if not s["stage"].startswith(("7", "8"))]
failed = [s["stage"] for s in stages if s["verdict"] in ("fail", "timeout")]
overall = ("FAIL" if failed else "PASS" if final and len(required) == 6 and all(
    s["verdict"] == "pass" for s in required) else "INCOMPLETE" if not final else "FAIL")
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = ""
doc = {"check": "scripts/gpu_check.sh", "commit": commit or None, "accelerator": os.environ["ACCEL"],
       "started_unix": int(os.environ["START"]), "budget_s": int(os.environ["BUDGET"]),
       "elapsed_s": round(time.time() - int(os.environ["START"]), 1), "complete": final,
       "overall": overall, "failed_stages": failed, "stages": stages, "figures": figures}
tmp = os.path.join(out, ".gpu_check.json.tmp")
with open(tmp, "w") as fh:
    json.dump(doc, fh, indent=2)
os.replace(tmp, os.path.join(out, "gpu_check.json"))
EOF
}

stage() {  # stage NAME LIMIT COMMAND...: exit 0 pass, 77 skipped (its last line says why), else fail
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - RESERVE - $(date +%s)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo; echo "=== $name: skipped, out of time (budget ${BUDGET}s) ==="
    printf '%s\tskipped\t\t0\tout of time\n' "$name" >> "$WORK/stages.tsv"; summary; return 0
  fi
  echo; echo "=== $name (limit ${limit}s, $(( $(date +%s) - START ))s into the check) ==="
  local started=$(date +%s%N)
  timeout --kill-after=3 "$limit" bash -c '"$@"' stage "$@" 2>&1 | tee "$WORK/stage.out"
  local rc=${PIPESTATUS[0]}
  local ms=$(( ($(date +%s%N) - started) / 1000000 ))
  local took="$((ms / 1000)).$(printf '%03d' $((ms % 1000)))" verdict note=""
  case $rc in
    0) verdict=pass ;;
    77) verdict=skipped; note=$(grep -v '^$' "$WORK/stage.out" | tail -1 | tr '\t' ' ') ;;
    124|137) verdict=timeout; note="cut off at ${limit}s" ;;
    *) verdict=fail; note=$(grep -v '^$' "$WORK/stage.out" | tail -1 | tr '\t' ' ' | cut -c1-300) ;;
  esac
  echo "--- $name: $verdict (exit $rc), ${took} s"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$verdict" "$rc" "$took" "$note" >> "$WORK/stages.tsv"
  summary
}

finish() {
  trap - EXIT TERM INT
  (cd "$RUNS" 2>/dev/null && find . \( -name record.json -o -name 'comparison.*' -o -name '*.log' \) \
    -size -2M -print0 | tar --null -czf "$OUT/records.tar.gz" -T - 2>/dev/null) || true
  summary final
  echo; echo "=== summary ($(( $(date +%s) - START ))s) ==="
  column -t -s $'\t' "$WORK/stages.tsv" 2>/dev/null || cat "$WORK/stages.tsv"
  "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print('overall:', d['overall'], d['failed_stages'] or '')" \
    "$OUT/gpu_check.json" 2>/dev/null
  ls "$OUT"
  grep -q '"overall": "PASS"' "$OUT/gpu_check.json" 2>/dev/null && exit 0
  exit 1
}
trap finish EXIT
trap 'echo "terminated: writing the summary"; exit 143' TERM INT

echo "ftmed GPU check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), budget ${BUDGET}s"
summary

# -- 1. environment -----------------------------------------------------------------------------------------
install_wheels() {  # install_wheels MODULE=WHEEL...: those whose module is missing, from gpu_wheels/
  "$PY" - "$@" <<'EOF'
import importlib.util, glob, os, subprocess, sys, zipfile
deps = os.environ["DEPS"]
missing = []
for pair in sys.argv[1:]:
    module, wheel = pair.split("=")
    if importlib.util.find_spec(module) is None:
        missing.append(wheel)
    elif module == "typing_extensions":  # pydantic 2.14 needs >= 4.16; the one package we may shadow
        from importlib.metadata import version
        if tuple(int(p) for p in version("typing_extensions").split(".")[:2]) < (4, 16):
            print(f"typing_extensions {version('typing_extensions')} is older than pydantic needs: installing 4.16")
            missing.append(wheel)
    elif module == "typer":
        from importlib.metadata import version
        if tuple(int(p) for p in version("typer").split(".")[:2]) < (0, 29):
            print(f"typer {version('typer')} is older than the CLI needs: installing 0.29")
            missing.append(wheel)
if not missing:
    print("nothing to install:", ", ".join(p.split("=")[0] for p in sys.argv[1:]), "present")
    sys.exit(0)
files = []
tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
for wheel in missing:
    found = [f for f in glob.glob("gpu_wheels/*.whl") if os.path.basename(f).lower().startswith(wheel.lower() + "-")
             and (f.endswith("-none-any.whl") or f"-{tag}-" in f)]
    if not found:
        sys.exit(f"no {tag} wheel for {wheel} in gpu_wheels/ (docs/gpu.md: the download command)")
    files.append(found[0])
print("installing from gpu_wheels/:", ", ".join(os.path.basename(f) for f in files))
if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile",
                    "--target", deps, "--upgrade", *files], check=True)
else:  # a wheel is a zip of what goes into site-packages
    for f in files:
        zipfile.ZipFile(f).extractall(deps)
    print("  (pip absent: unpacked the wheels)")
EOF
}
environment() {
  install_wheels medmnist=medmnist fire=fire termcolor=termcolor typer=typer pydantic=pydantic \
    pydantic_core=pydantic_core annotated_types=annotated_types typing_inspection=typing_inspection \
    typing_extensions=typing_extensions || return 1
  "$PY" - <<'EOF'
import importlib.util, json, os, platform, subprocess, torch, lightning
card = torch.cuda.get_device_name() if torch.cuda.is_available() else None
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True) if card else None
info = {"card": card, "nvidia_smi": smi.stdout.strip() if smi and smi.returncode == 0 else None,
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "lightning": lightning.__version__,
        "present": {n: importlib.util.find_spec(n) is not None
                    for n in ("tensorflow", "jax", "keras", "matplotlib", "pytest", "medmnist", "typer")}}
print(json.dumps(info))
json.dump(info, open(os.path.join(os.environ["FIG"], "environment.json"), "w"), indent=2)
EOF
  "$PY" -m cli.main --help > /dev/null || { echo "the CLI does not start"; return 1; }
  if [ "$ACCEL" = gpu ]; then "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || return 1; fi
}
export -f install_wheels environment summary
stage "1 environment" 60 environment

# -- 2. data ------------------------------------------------------------------------------------------------
make_data() {
  "$PY" -m cli.main data synth --out "$WORK/full" --scale "$SCALE" || return 1
  "$PY" -m cli.main data synth --out "$WORK/small" --scale 0.05 || return 1
}
export -f make_data
[ -f "$WORK/full/pathmnist.npz" ] && [ -f "$WORK/small/pathmnist.npz" ] && echo "data: reusing $WORK/full, $WORK/small"
[ -f "$WORK/full/pathmnist.npz" ] && [ -f "$WORK/small/pathmnist.npz" ] || stage "2 data" 60 make_data
grep -q '^2 data' "$WORK/stages.tsv" || printf '2 data\tpass\t0\t0\treused\n' >> "$WORK/stages.tsv"

# -- 3. device checks ---------------------------------------------------------------------------------------
device_checks() {
  local rc=0
  "$PY" scripts/gpu_checks.py --data-dir "$WORK/small" --out "$FIG/device_checks.json" || rc=1
  # The CUDA tests run whatever the script found (one failure must not hide the others).
  if "$PY" -c "import pytest" 2>/dev/null; then
    "$PY" -m pytest -q tests/test_lightning_fast.py -k cuda -p no:cacheprovider || rc=1
  else
    echo "pytest absent: tests/test_lightning_fast.py skipped (scripts/gpu_checks.py covered the CUDA cases)"
  fi
  return $rc
}
export -f device_checks
stage "3 device checks" 100 device_checks

# -- 4. benchmark -------------------------------------------------------------------------------------------
stage "4 benchmark" 110 "$PY" benchmarks/gpu_speed.py --data-dir "$WORK/full" --epochs 3 --models "$BENCH_MODELS" \
  --out "$OUT/gpu_speed.json"

# -- 5. the Lightning half of the study ---------------------------------------------------------------------
study() {
  local started=$(date +%s%N)
  "$PY" -m cli.main compare --frameworks lightning --accelerator "$ACCEL" --variants study --seeds "$STUDY_SEEDS" \
    --epochs "$STUDY_EPOCHS" --data-dir "$WORK/full" --runs-dir "$RUNS/study"
  local rc=$? ms=$(( ($(date +%s%N) - started) / 1000000 ))
  "$PY" - "$RUNS/study" "$ms" <<'EOF' || rc=1
import glob, json, os, statistics, sys
records = [json.load(open(p)) for p in glob.glob(f"{sys.argv[1]}/*/record.json")]
done = [r for r in records if r.get("status") == "finished"]
steady = [s for r in done for s in r["history"]["epoch_seconds"][1:]]  # epoch 1 includes capture
figures = {"wall_s": int(sys.argv[2]) / 1000, "runs": len(records), "finished": len(done),
           "median_epoch_s_after_first": round(statistics.median(steady), 4) if steady else None,
           "median_training_s": round(statistics.median(r["training_seconds"] for r in done), 2) if done else None,
           "paths": sorted({r["environment"].get("training_path") for r in done}),
           "test_accuracy": {f"{r['config']['name']}/seed{r['config']['seed']}": r.get("test", {}).get("accuracy")
                             for r in done}}
print(f"study: {len(done)}/{len(records)} runs finished in {figures['wall_s']:.1f} s wall; median s/epoch "
      f"(epochs 2+) {figures['median_epoch_s_after_first']}; paths {figures['paths']}")
json.dump(figures, open(os.path.join(os.environ["FIG"], "study.json"), "w"), indent=2)
sys.exit(0 if done and len(done) == len(records) else 1)
EOF
  return $rc
}
export -f study
stage "5 study (lightning half, target <= 180 s)" 210 study

# -- 6. determinism through the CLI -------------------------------------------------------------------------
determinism() {
  local ref
  ref=$("$PY" - "$RUNS/study" <<'EOF'
import glob, json, os, sys
for path in glob.glob(f"{sys.argv[1]}/*/record.json"):
    r = json.load(open(path))
    if r.get("status") == "finished" and r["config"]["name"] == "baseline" and r["config"]["seed"] == 0:
        print(os.path.dirname(path), r["runtime"].get("threads") or 0)  # same threads: same CPU kernels
EOF
)
  if [ -z "$ref" ]; then echo "the study has no finished baseline seed 0 to repeat"; return 1; fi
  local threads=${ref##* }; ref=${ref% *}
  "$PY" -m cli.main train -f lightning --accelerator "$ACCEL" --data-dir "$WORK/full" --epochs "$STUDY_EPOCHS" \
    --seed 0 --threads "$threads" --runs-dir "$RUNS/determinism" || return 1
  "$PY" - "$ref" "$RUNS/determinism" <<'EOF'
import glob, json, os, sys, numpy as np
a = np.load(glob.glob(f"{sys.argv[1]}/test_logits.npy")[0])
b = np.load(glob.glob(f"{sys.argv[2]}/*/test_logits.npy")[0])
same = bool(np.array_equal(a, b))
figures = {"same_seed_test_logits_bitwise": same, "max_abs_diff": float(np.abs(a - b).max()),
           "compared": "compare's baseline seed 0 vs a separate `ftmed train` of it"}
print(f"same seed twice (compare's run vs train): test logits bitwise equal: {same}, max |d| {figures['max_abs_diff']}")
json.dump(figures, open(os.path.join(os.environ["FIG"], "determinism.json"), "w"), indent=2)
sys.exit(0 if same else 1)
EOF
}
export -f determinism
stage "6 determinism" 50 determinism

# -- 7. keras[jax] (optional) -------------------------------------------------------------------------------
keras_jax() {
  "$PY" -c "import jax" 2>/dev/null || { echo "skipped: jax is not installed here"; return 77; }
  install_wheels keras=keras namex=namex optree=optree \
    || { echo "skipped: keras is not installed here and gpu_wheels/ has no usable keras wheels"; return 77; }
  "$PY" -m cli.main train -f "keras[jax]" --accelerator "$ACCEL" --epochs 1 --data-dir "$WORK/small" \
    --runs-dir "$RUNS/keras_jax" || return 1
  "$PY" - <<'EOF'
import glob, json, os
r = json.load(open(glob.glob(os.path.join(os.environ["RUNS"], "keras_jax", "**", "record.json"), recursive=True)[0]))
env = r.get("environment", {})
figures = {"status": r.get("status"), "keras_backend": env.get("keras_backend"), "device": env.get("device"),
           "epoch_seconds": r.get("history", {}).get("epoch_seconds"), "test": r.get("test")}
print(f"keras[jax]: {figures}")
json.dump(figures, open(os.path.join(os.environ["FIG"], "keras_jax.json"), "w"), indent=2)
raise SystemExit(0 if r.get("status") == "finished" else 1)
EOF
}
export -f keras_jax
stage "7 keras[jax] (optional)" 60 keras_jax

# -- 8. large images (optional) -----------------------------------------------------------------------------
large_images() {
  local scale=${FTMED_CHECK_224_SCALE:-0.05} mem=$WORK/gpu_memory_224.txt sampler=""
  [ -f "$WORK/224/pathmnist_224.npz" ] || "$PY" -m cli.main data synth --size 224 --scale "$scale" \
    --out "$WORK/224" || return 1
  if command -v nvidia-smi >/dev/null && [ "$ACCEL" = gpu ]; then
    (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.5; done) > "$mem" 2>/dev/null &
    sampler=$!
  fi
  "$PY" -m cli.main compare --size 224 --frameworks lightning --accelerator "$ACCEL" \
    --variants baseline,sgd-momentum --seeds 0 --epochs 2 --data-dir "$WORK/224" --runs-dir "$RUNS/compare_224"
  local rc=$?
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  "$PY" - "$RUNS/compare_224" "$mem" <<'EOF' || rc=1
import glob, json, os, sys
peak = None
if os.path.exists(sys.argv[2]):
    values = [int(v) for v in open(sys.argv[2]).read().split() if v.strip().isdigit()]
    peak = max(values) if values else None
runs = {}
for path in sorted(glob.glob(f"{sys.argv[1]}/*/record.json")):
    r = json.load(open(path))
    runs[r["config"]["name"]] = {"status": r["status"], "epoch_seconds": r["history"].get("epoch_seconds"),
                                 "path": r["environment"].get("training_path"),
                                 "train_rows": r.get("data", {}).get("train_rows")}
figures = {"peak_card_memory_mib": peak, "runs": runs}
print(f"224 px: {figures}")
json.dump(figures, open(os.path.join(os.environ["FIG"], "large_224.json"), "w"), indent=2)
sys.exit(0 if runs and all(v["status"] == "finished" for v in runs.values()) else 1)
EOF
  return $rc
}
export -f large_images
stage "8 224 px (optional)" 70 large_images

#!/usr/bin/env bash
# One-go verification of ftmed's Lightning path on one CUDA GPU, in under 8 minutes (README, "GPU").
#
#   bash scripts/gpu_check.sh            # from the checkout root; results in $OUT or ./gpu_check_out
#
# Needs: python3 with torch (CUDA) and lightning. No TensorFlow. Packages it lacks among ftmed's CLI
# dependencies are installed from wheels in gpu_wheels/ (made on a machine with a registry, see README)
# into .gpu_deps/ with `pip install --no-deps --target`, which goes on PYTHONPATH; nothing else is touched.
#
# Stages, most important first (each under its own time limit, ~6 minutes in all when nothing hangs; a
# failed stage is reported and the next one still runs):
#   1. environment: card, driver, torch, lightning; install what is missing
#   2. data: a PathMNIST-sized synthetic file (89,996 train rows) and a 5%-scale one
#   3. device checks (scripts/gpu_checks.py): fast vs plain path after 2 epochs (max |d|), eager vs graph
#      blocks (bitwise), the same seed twice (bitwise); the CUDA tests of tests/test_lightning_fast.py if
#      pytest is present
#   4. benchmark: benchmarks/gpu_speed.py (ftmed fast/plain vs eager and CUDA-graph loops, both models)
#   5. the Lightning half of the study timed: 5 variants x 3 seeds x 20 epochs (target <= 3 min)
#   6. determinism through the CLI: `train -f lightning --accelerator gpu` twice, test logits bitwise equal
#   7. a small `compare --frameworks lightning --accelerator gpu`
#   8. keras_ref on the JAX backend: `train -f keras[jax] --accelerator gpu`, 1 epoch on the 5 % file
#      (skipped, with the reason, where jax is absent, or keras is absent and gpu_wheels/ has no keras)
#   9. large images: a 224 px synthetic file (5 % scale), `compare --size 224 --accelerator gpu`, 2 runs x 2
#      epochs: s/epoch per run, training path, and the card's peak memory in use (nvidia-smi)
#
# A dry run of the plumbing on a CPU machine (small, not a measurement):
#   FTMED_CHECK_ACCELERATOR=cpu FTMED_CHECK_SCALE=0.02 FTMED_CHECK_EPOCHS=1 FTMED_CHECK_SEEDS=0 \
#   FTMED_CHECK_BENCH_MODELS=baseline bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
ACCEL=${FTMED_CHECK_ACCELERATOR:-gpu}
SCALE=${FTMED_CHECK_SCALE:-1.0}
STUDY_EPOCHS=${FTMED_CHECK_EPOCHS:-20}
STUDY_SEEDS=${FTMED_CHECK_SEEDS:-0,1,2}
BENCH_MODELS=${FTMED_CHECK_BENCH_MODELS:-baseline,wider-deeper}
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
DATA=${FTMED_GPU_DATA:-/tmp/ftmed_gpu_check}
RUNS=$DATA/runs  # run directories (checkpoints: large) stay here; $OUT gets the small outputs
PY=${PYTHON:-python3}
export PYTHONPATH=$ROOT:$ROOT/.gpu_deps${PYTHONPATH:+:$PYTHONPATH}
export FTMED_DATA_DIR=$DATA
STATUS=0
export ROOT OUT DATA RUNS PY ACCEL SCALE STUDY_EPOCHS STUDY_SEEDS BENCH_MODELS
exec > >(tee -a "$LOG") 2>&1

stage() {  # stage NAME SECONDS COMMAND... (a command or one of the functions below, exported)
  local name=$1 limit=$2; shift 2
  echo; echo "=== $name (limit ${limit}s) ==="
  local started=$(date +%s%N)
  timeout "$limit" bash -c '"$@"' stage "$@"
  local rc=$?
  local took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
  local took="$((took_ms / 1000)).$(printf '%03d' $((took_ms % 1000)))"
  echo "--- $name: exit $rc, ${took} s"
  echo "$name	$rc	$took" >> "$OUT/stages.tsv"
  [ "$rc" -eq 0 ] || STATUS=1
  return 0
}

echo "ftmed GPU check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi not available"
: > "$OUT/stages.tsv"
rm -rf "$RUNS"  # a rerun on the same machine must not reuse finished runs (the study is timed)

# -- 1. environment -----------------------------------------------------------------------------------------
install_missing() {
  "$PY" - <<'EOF'
import importlib, subprocess, sys
# module -> wheel name; medmnist (info.py only) and the CLI's typer stack. Installed only when missing
# (typing_extensions also when older than pydantic needs).
wanted = {"medmnist": "medmnist", "fire": "fire", "typer": "typer", "pydantic": "pydantic",
          "pydantic_core": "pydantic_core", "annotated_types": "annotated_types",
          "typing_inspection": "typing_inspection", "rich": "rich", "shellingham": "shellingham",
          "annotated_doc": "annotated_doc", "markdown_it": "markdown_it_py", "mdurl": "mdurl",
          "pygments": "pygments", "termcolor": "termcolor", "typing_extensions": "typing_extensions"}
missing = []
for module, wheel in wanted.items():
    try:
        mod = importlib.import_module(module)
        if module == "typer" and not hasattr(importlib.import_module("typer"), "_click"):
            raise ImportError("typer too old")
        if module == "typing_extensions":
            from importlib.metadata import version
            if tuple(int(p) for p in version("typing_extensions").split(".")[:2]) < (4, 16):
                raise ImportError("typing_extensions older than pydantic 2.14 needs")
    except ImportError:
        missing.append(wheel)
print("installing from gpu_wheels/:", ", ".join(missing) if missing else "nothing (all present)")
has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
if missing and has_pip:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--find-links",
                    "gpu_wheels", "--target", ".gpu_deps", "--upgrade", *missing], check=True)
elif missing:  # no pip: a wheel is a zip of what goes into site-packages; unpack the matching ones
    import glob, zipfile
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for wheel in missing:
        files = [f for f in glob.glob("gpu_wheels/*.whl") if f.split("/")[-1].lower().startswith(wheel.lower() + "-")
                 and (f.endswith("-none-any.whl") or f"-{tag}-" in f)]
        if not files:
            sys.exit(f"no wheel for {wheel} ({tag}) in gpu_wheels/")
        zipfile.ZipFile(files[0]).extractall(".gpu_deps")
    print("  (pip absent: unpacked the wheels)")
EOF
}
environment() {
  install_missing || return 1
  "$PY" - <<'EOF'
import importlib.util, platform, torch, lightning
print(f"python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}, "
      f"CUDA {torch.version.cuda}, device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'NONE'}")
for name in ("tensorflow", "matplotlib", "pytest", "medmnist", "typer"):
    print(f"  {name}: {'present' if importlib.util.find_spec(name) else 'absent'}")
if importlib.util.find_spec("matplotlib") is None:
    print("  note: without matplotlib, compare trains and records every run but fails when it draws the plots")
EOF
  if [ "$ACCEL" = gpu ]; then "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || return 1; fi
}
export -f install_missing environment
stage "1 environment" 90 environment

# -- 2. data ------------------------------------------------------------------------------------------------
make_data() {
  [ -f "$DATA/full/pathmnist.npz" ] || "$PY" -m cli.main data synth --out "$DATA/full" --scale "$SCALE" || return 1
  [ -f "$DATA/small/pathmnist.npz" ] || "$PY" -m cli.main data synth --out "$DATA/small" --scale 0.05 || return 1
}
export -f make_data
stage "2 data" 90 make_data

# -- 3. device checks ---------------------------------------------------------------------------------------
device_checks() {
  "$PY" scripts/gpu_checks.py --data-dir "$DATA/small" --out "$OUT/device_checks.json" || return 1
  if "$PY" -c "import pytest" 2>/dev/null; then
    "$PY" -m pytest -q -x tests/test_lightning_fast.py -k cuda -p no:cacheprovider || return 1  # CUDA tests
  else
    echo "pytest absent: tests/test_lightning_fast.py skipped (scripts/gpu_checks.py covered the CUDA cases)"
  fi
}
export -f device_checks
stage "3 device checks" 120 device_checks

# -- 4. benchmark -------------------------------------------------------------------------------------------
stage "4 benchmark" 120 "$PY" benchmarks/gpu_speed.py --data-dir "$DATA/full" --epochs 3 --models "$BENCH_MODELS" \
  --out "$OUT/gpu_speed.json"

# -- 5. the Lightning half of the study ---------------------------------------------------------------------
stage "5 study (lightning half: 5 variants x 3 seeds x 20 epochs; target <= 180 s)" 210 \
  "$PY" -m cli.main compare --frameworks lightning --accelerator "$ACCEL" --variants study --seeds "$STUDY_SEEDS" \
  --epochs "$STUDY_EPOCHS" --data-dir "$DATA/full" --runs-dir "$RUNS/study"
"$PY" - "$RUNS/study" <<'EOF' || true
import glob, json, statistics, sys
records = [json.load(open(p)) for p in glob.glob(f"{sys.argv[1]}/*/record.json")]
done = [r for r in records if r.get("status") == "finished"]
if done:
    per_epoch = [s for r in done for s in r["history"]["epoch_seconds"][1:]]  # epoch 1 includes capture
    per_epoch = per_epoch or [s for r in done for s in r["history"]["epoch_seconds"]]
    print(f"study: {len(done)}/{len(records)} runs finished; median epoch_seconds (epochs 2+ where run) "
          f"{statistics.median(per_epoch):.3f} s; median training_seconds {statistics.median(r['training_seconds'] for r in done):.1f} s; "
          f"path: {sorted({r['environment'].get('training_path') for r in done})}")
EOF

# -- 6. determinism through the CLI -------------------------------------------------------------------------
determinism() {
  local runs=$RUNS/determinism
  for i in 1 2; do
    "$PY" -m cli.main train -f lightning --accelerator "$ACCEL" --data-dir "$DATA/full" --epochs 2 \
      --runs-dir "$runs/$i" --force || return 1
  done
  "$PY" - "$runs" <<'EOF'
import sys, glob, numpy as np
a, b = (np.load(glob.glob(f"{sys.argv[1]}/{i}/*/test_logits.npy")[0]) for i in (1, 2))
print(f"same seed twice through the CLI: test logits bitwise equal: {np.array_equal(a, b)}, "
      f"max |d| {float(np.abs(a - b).max())}")
sys.exit(0 if np.array_equal(a, b) else 1)
EOF
}
export -f determinism
stage "6 determinism" 75 determinism

# -- 7. small compare ---------------------------------------------------------------------------------------
stage "7 small compare" 90 "$PY" -m cli.main compare --frameworks lightning --accelerator "$ACCEL" \
  --variants baseline,sgd-momentum --seeds 0 --epochs 2 --data-dir "$DATA/small" --runs-dir "$RUNS/compare_small"

# -- 8. keras[jax] ------------------------------------------------------------------------------------------
keras_jax() {
  if ! "$PY" -c "import jax" 2>/dev/null; then echo "skipped: jax is not installed here"; return 0; fi
  if ! "$PY" -c "import keras" 2>/dev/null; then
    # keras and the dependencies jax does not bring; optional: without the wheels the stage is skipped.
    "$PY" -m pip install -q --no-deps --no-index --find-links gpu_wheels --target .gpu_deps \
      keras namex absl_py h5py optree ml_dtypes 2>/dev/null \
      || { echo "skipped: keras is not installed here and gpu_wheels/ has no keras wheels (README, GPU)"; return 0; }
  fi
  "$PY" -m cli.main train -f "keras[jax]" --accelerator "$ACCEL" --epochs 1 --data-dir "$DATA/small" \
    --runs-dir "$RUNS/keras_jax" || return 1
  "$PY" - <<'EOF2'
import glob, json, os
records = glob.glob(os.path.join(os.environ["RUNS"], "keras_jax", "**", "record.json"), recursive=True)
r = json.load(open(records[0]))
env = r.get("environment", {})
print(f"keras[jax] record: status {r.get('status')}, keras_backend {env.get('keras_backend')}, "
      f"device {env.get('device')}, loss_formula {env.get('loss_formula')}, test {r.get('test')}")
raise SystemExit(0 if r.get("status") == "finished" else 1)
EOF2
}
export -f keras_jax
stage "8 keras[jax]" 60 keras_jax

# -- 9. large images on the GPU: a 224 px grid ----------------------------------------------------------
large_images() {
  local scale=${FTMED_CHECK_224_SCALE:-0.05}
  [ -f "$DATA/224/pathmnist_224.npz" ] || "$PY" -m cli.main data synth --size 224 --scale "$scale" \
    --out "$DATA/224" || return 1
  local mem=$OUT/gpu_memory_224.txt sampler=""
  if command -v nvidia-smi >/dev/null; then
    (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.5; done) > "$mem" 2>/dev/null &
    sampler=$!
  fi
  "$PY" -m cli.main compare --size 224 --frameworks lightning --accelerator "$ACCEL" \
    --variants baseline,sgd-momentum --seeds 0 --epochs 2 --data-dir "$DATA/224" --runs-dir "$RUNS/compare_224"
  local rc=$?
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null
    echo "peak GPU memory in use during the 224 px compare (nvidia-smi, whole card, MiB): $(sort -n "$mem" | tail -1)"
  fi
  "$PY" - "$RUNS/compare_224" <<'EOF3'
import glob, json, sys
for path in sorted(glob.glob(f"{sys.argv[1]}/*/record.json")):
    r = json.load(open(path))
    print(f"224 px {r['config']['name']}: {r['status']}, epoch_seconds {r['history'].get('epoch_seconds')}, "
          f"path {r['environment'].get('training_path')}")
EOF3
  return $rc
}
export -f large_images
stage "9 224 px compare" 120 large_images

# The small outputs of the runs (records, tables, logs) go back with $OUT; checkpoints stay in $RUNS.
(cd "$RUNS" 2>/dev/null && find . \( -name record.json -o -name 'comparison.*' -o -name '*.log' \) -size -2M \
  -exec cp --parents {} "$OUT/" \;) || true

echo; echo "=== summary ==="; column -t -s $'\t' "$OUT/stages.tsv" 2>/dev/null || cat "$OUT/stages.tsv"
echo "overall: $([ $STATUS -eq 0 ] && echo PASS || echo 'FAIL (see above)'); log: $LOG"
exit $STATUS

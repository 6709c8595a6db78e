"""Markdown tables generated from committed measurements (the benchmarks' JSON, the sample report), so that
a figure exists in one place and every page that shows it is an output of this script.

    python benchmarks/tables.py            # rewrite the generated blocks in README.md and docs/*.md
    python benchmarks/tables.py --check    # exit 1 if a generated block differs from what the JSON gives

A generated block sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` in a markdown file;
NAME picks the renderer below. tests/test_generated_tables.py runs `--check`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_SPEED = ROOT / "benchmarks" / "gpu_latest.json"
GPU_CHECK = ROOT / "benchmarks" / "gpu_check_latest.json"
PATHS = ("ftmed fast", "ftmed plain", "eager loop", "graph loop")


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def gpu_speed_table() -> str:
    """s/epoch of ftmed's two Lightning paths and the two hand loops, per model, with the ratio to the
    CUDA-graph loop (the floor) measured in the same run."""
    speed = _load(GPU_SPEED)
    lines = [f"Measured on one {speed['device']} (torch {speed['torch']}, float32, batch 128, {speed['epochs']} "
             f"epochs; s/epoch = median of the epochs after the first; ratio to the `{speed['models']['baseline']['reference']}` "
             f"of the same run):", "",
             "| model | " + " | ".join(PATHS) + " |", "|---|" + "---|" * len(PATHS)]
    for model, figures in speed["models"].items():
        ref = figures["s_per_epoch"][figures["reference"]]
        cells = [f"{figures['s_per_epoch'][p]:.3f} s ({figures['s_per_epoch'][p] / ref:.2f}×)" for p in PATHS]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Fast path in that run: {speed['models']['baseline']['fast_path']}; "
                 f"{speed['models']['baseline']['train_rows']:,} training rows per epoch.")
    return "\n".join(lines)


def gpu_check_table() -> str:
    """The other figures of the same GPU check: device checks, the study's Lightning half, determinism,
    keras[jax] and 224 px."""
    check = _load(GPU_CHECK)
    fig = check["figures"]
    env = fig.get("environment", {})
    lines = [f"`scripts/gpu_check.sh` on {env.get('nvidia_smi') or env.get('card')} "
             f"(Python {env.get('python')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, lightning "
             f"{env.get('lightning')}): **{check['overall']}** in {check['elapsed_s']:.0f} s.", "",
             "| stage | verdict | seconds |", "|---|---|---|"]
    for stage in check["stages"]:
        lines.append(f"| {stage['stage']} | {stage['verdict']} | {stage['seconds']:.1f} |")
    lines += ["", "| check | figure |", "|---|---|"]
    device = fig.get("device_checks", {}).get("results", {})
    for name, result in device.items():
        if "plain_vs_fast" in result:
            plain, eager = result["plain_vs_fast"], result["eager_vs_fast"]
            lines.append(f"| {name}, 2 epochs: plain vs fast path, max \\|Δ\\| weights / losses / test logits | "
                         f"{plain['weights']:.3g} / {plain['losses']:.3g} / {plain['test_logits']:.3g}; eager vs graph "
                         f"blocks {'bitwise equal' if all(v == 0 for v in eager.values()) else eager} ({result['fast_path']}) |")
        else:
            lines.append(f"| {name} | {'bitwise equal' if result['ok'] else result['diff']} |")
    study = fig.get("study")
    if study:
        lines.append(f"| the study's Lightning half ({study['runs']} runs × 20 epochs, `compare --frameworks lightning "
                     f"--accelerator gpu`, 4 runs sharing the card) | {study['wall_s']:.1f} s wall, {study['finished']}/"
                     f"{study['runs']} finished; median {study['median_epoch_s_after_first']:.3f} s/epoch while sharing |")
    det = fig.get("determinism")
    if det:
        lines.append(f"| same seed twice ({det['compared']}) | test logits "
                     f"{'bitwise equal' if det['same_seed_test_logits_bitwise'] else 'differ: ' + str(det['max_abs_diff'])} |")
    kj = fig.get("keras_jax")
    if kj:
        lines.append(f"| `train -f keras[jax] --accelerator gpu`, 1 epoch on the 5 % file | {kj['status']} on "
                     f"{kj['device']}, {kj['epoch_seconds'][0]:.1f} s (first epoch: XLA compilation included) |")
    large = fig.get("large_224")
    if large:
        epochs = {name: run["epoch_seconds"][-1] for name, run in large["runs"].items()}
        lines.append(f"| 224 px (`compare --size 224`, 5 %-scale synthetic file, 2 runs side by side) | "
                     + ", ".join(f"{n} {s:.2f} s/epoch" for n, s in epochs.items())
                     + f"; peak card memory {large['peak_card_memory_mib']:,} MiB (whole card, nvidia-smi) |")
    return "\n".join(lines)


INFERENCE = ROOT / "benchmarks" / "inference_latest.json"


def inference_table() -> str:
    """images/s of one exported run per serving path and batch size, with the ratio to the baseline path
    measured in the same run (benchmarks/inference.py)."""
    bench = _load(INFERENCE)
    batches = [str(b) for b in bench["batches"]]
    lines = [f"`python benchmarks/inference.py` on {bench['processor']} ({bench['device']}, {bench['threads']} "
             f"thread(s) per process, one process per path; images/s = median of {bench['rounds']} rounds of at "
             f"least {bench['seconds_per_round']:g} s; ratio to `{bench['baseline']}` of the same run). Model: "
             f"{bench['model']}.", "",
             "| path | " + " | ".join(f"batch {b}: images/s (× {bench['baseline']})" for b in batches)
             + " | versions |", "|---|" + "---|" * (len(batches) + 1)]
    for path, figures in bench["paths"].items():
        cells = [f"{figures['images_per_s'][b]:,.0f} ({figures['ratio'][b]:.3g}×)" for b in batches]
        lines.append(f"| {path} | " + " | ".join(cells) + f" | {figures['version']} |")
    return "\n".join(lines)


SAMPLE = ROOT / "docs" / "sample" / "comparison.md"
SAMPLE_COLUMNS = ("variant", "study acc %", "lightning acc %", "keras acc %", "lightning s/epoch", "keras s/epoch",
                  "Δacc L−K [95% CI]", "equivalence", "vs baseline (seed mean)")


def sample_table() -> str:
    """The README's cut of the committed sample report (docs/sample/comparison.md, itself rendered from
    docs/sample/runs by `ftmed report`): its title and the columns a newcomer reads first."""
    lines = SAMPLE.read_text().splitlines()
    title = next(line[2:] for line in lines if line.startswith("# "))
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    keep = [header.index(c) for c in SAMPLE_COLUMNS if c in header]
    out = [f"**{title}**", ""]
    for i, line in enumerate(table):
        cells = [c.strip() for c in line.strip("|").split("|")]
        out.append("| " + " | ".join(cells[k] if i != 1 else "---" for k in keep) + " |")
    return "\n".join(out)


RENDERERS = {"gpu-speed": gpu_speed_table, "gpu-check": gpu_check_table, "sample-table": sample_table,
             "inference": inference_table}
TARGETS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def render(text: str) -> str:
    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"unknown generated block {name!r} (known: {', '.join(RENDERERS)})")
        return match.group(1) + RENDERERS[name]() + "\n" + match.group(4)
    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale blocks instead of rewriting them")
    args = parser.parse_args()
    stale = []
    for path in TARGETS:
        if not path.exists():
            continue
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("generated tables out of date (run python benchmarks/tables.py): " + ", ".join(map(str, stale)))
        return 1
    print(("rewrote " + ", ".join(map(str, stale))) if stale else "generated tables are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())

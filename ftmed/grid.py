"""The grid runner behind `ftmed compare` and `ftmed.compare`: plan the variants x frameworks x seeds jobs,
run the missing ones through an executor (`ftmed.executors`: worker processes here, or Ray tasks), each run
in its own process (`python -m ftmed.worker`). Resumable: finished runs are skipped, and a run interrupted or
killed mid-training resumes from its last finished epoch. Several studies may share one runs folder (see
`run_study`).

Layering: this is the API's layer (it imports the core at module level, the frameworks never: they run in
the worker processes); the CLI imports it, never the other way round.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ftmed_core.errors import ConfigError

if TYPE_CHECKING:
    from ftmed_core.config import ExperimentConfig
    from ftmed_core.variants import Variant


def _echo(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


# Runs side by side on one GPU when --jobs is not given: the study's runs are launch-bound, so several
# processes keep one GPU busy (benchmarks/gpu_speed.py and scripts/gpu_check.sh measure it).
GPU_JOBS = 4
# On CPU, two runs side by side (cores / 2 threads each): one run's per-step Python work leaves cores idle
# that the other fills, so a grid finishes sooner than one run at a time with every core (measured on
# 2 cores: docs/statistics.md). Per-run seconds are then shared-core figures; --jobs 1 times runs alone.
CPU_JOBS = 2


def _cores() -> int:
    from ftmed_core.config import RuntimeConfig
    from ftmed_core.runner import resolve_threads

    return resolve_threads(RuntimeConfig())  # threads=0: one per core this process may use


def default_jobs(accelerator: str, devices: int) -> int:
    """--jobs when not given: GPU_JOBS for one-GPU runs on a CUDA machine; a multi-device run 1 (it takes
    the devices itself); otherwise (CPU) CPU_JOBS, at most one per core."""
    if devices != 1:
        return 1
    cpu = min(CPU_JOBS, _cores())
    if accelerator not in ("gpu", "auto"):
        return cpu
    if accelerator == "auto":
        # Probe CUDA only where torch is loaded already or an NVIDIA driver is present, so that a CPU-only
        # host never imports torch here.
        if "torch" not in sys.modules and not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/dxg")):
            return cpu
        import torch

        if not torch.cuda.is_available():
            return cpu
    return GPU_JOBS


@dataclass
class Job:
    framework: str
    config: ExperimentConfig
    run_key: str
    # The data file the run trains on and its summary (`runner.data_summary`): set for every job of a
    # grid over several files, so one executor call can take runs on different files; None: the call's.
    source: dict | None = None
    data_path: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.config.name} / {self.framework} / seed {self.config.seed}"


def check_distinct_seeds(seeds: Sequence[int]) -> None:
    """ConfigError naming any seed listed more than once: each seed is one run, counted once."""
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ConfigError(f"seed {', '.join(map(str, repeated))} is listed more than once in "
                          f"{','.join(map(str, seeds))}; each seed is one run, list it once")


def plan(variants: Sequence[Variant], frameworks: Sequence[str], seeds: Sequence[int], *, data_md5: str,
         precision: str, epochs: int | None = None, dataset: str | None = None, size: int | None = None,
         data_dir: str | Path | None = None, shuffle: str | None = None) -> list[Job]:
    """One Job per variant x seed x framework, in that order; `epochs`, `dataset`, `size` and `shuffle`
    replace the variant's value when given, and the run key names `data_md5` and `precision`.

    One run is one observation: a seed listed twice, or two variants that compute the same thing (their
    configurations differ in name only), would count one run twice, so either is a ConfigError naming them.
    A variant the task makes the same network as an earlier one (`head_twins`: sigmoid-output on a
    multi-label task) is left out with one line on stderr, not refused: it differs on other tasks.
    """
    from ftmed_core.records import run_key

    check_distinct_seeds(seeds)
    jobs = []
    named: dict[str, str] = {}  # run key -> the variant that claimed it
    twins = head_twins(variants, dataset)
    for name, twin in twins.items():
        _echo(f"{name} trains exactly what {twin} trains on {dataset} (a multi-label task: every head is "
              f"per-finding sigmoids); not run there", err=True)
    for variant in variants:
        if variant.name in twins:
            continue
        for seed in seeds:
            for framework in frameworks:
                config = replace(variant.config, seed=seed, data_dir=str(data_dir) if data_dir else None,
                                 **{k: v for k, v in (("epochs", epochs), ("dataset", dataset), ("size", size),
                                                      ("shuffle", shuffle))
                                    if v is not None})
                key = run_key(framework, config, data_md5, precision)
                twin = named.setdefault(key, variant.name)
                if twin != variant.name:
                    raise ConfigError(
                        f"variants {twin!r} and {variant.name!r} have the same configuration here (they differ in "
                        f"name only, after --epochs/--shuffle/--dataset/--size), so they would be one run counted "
                        f"twice; drop one or make them differ")
                jobs.append(Job(framework, config, key))
    return jobs


def head_twins(variants: Sequence[Variant], dataset: str | None) -> dict[str, str]:
    """{variant: the earlier variant it equals} among variants that differ only in `output_activation` and
    whose heads the task maps to the same activation (`ftmed_core.tasks.head_for`): on a multi-label task
    softmax becomes per-finding sigmoids, so `sigmoid-output` is the baseline's network, loss and numbers,
    and training it again would count one run twice. Empty for single-label tasks (every head differs)."""
    import json

    from ftmed_core.tasks import head_for

    seen: dict[str, tuple[str, str]] = {}  # effective configuration -> (variant, its output activation)
    twins: dict[str, str] = {}
    for variant in variants:
        config = variant.config if dataset is None else replace(variant.config, dataset=dataset)
        head = head_for(config.dataset, config.output_activation)[1]
        effective = json.dumps(replace(config, name="", output_activation=head).to_dict(), sort_keys=True)
        twin, activation = seen.setdefault(effective, (variant.name, config.output_activation))
        if twin != variant.name and activation != config.output_activation:
            twins[variant.name] = twin
    return twins


def run_study(planned: list[Job], runtime, source: dict, runs_dir: Path, pool, label: str, per_job: int,
              data_path: Path | None = None) -> None:
    """Train every planned run that no process has finished, skipping runs another process is training.

    `pool` is the executor (`ftmed.executors`: local worker processes or Ray tasks); its `run` returns the
    jobs it found claimed by another process.

    Several studies may share a runs folder: each run is claimed by one process (`ftmed_core.locks`).
    Runs in flight elsewhere are skipped, then waited for once this study's own runs are done; if their
    owner died meanwhile (the kernel drops its claim), they are trained here. A failed run is retried
    once per `compare`, as before; a run another process failed while we waited is accepted as failed.
    Damaged runs are moved aside (`<run>.damaged-<time>`) with one line each, and trained again.
    """
    from ftmed_core.locks import claim, holder, run_lock_path
    from ftmed_core.runner import triage_runs

    by_key = {job.run_key: job for job in planned}
    candidates, first = list(by_key), True
    while candidates:
        state = triage_runs(runs_dir, candidates)
        for line in state.damaged:
            _echo(line, err=True)
        retry = set(state.missing + (state.failed if first else []))
        retry = [key for key in candidates if key in retry]  # in the planned order
        if first:
            done = len(planned) - len(retry) - len(state.in_flight)
            busy_text = f", {len(state.in_flight)} being trained by another process" if state.in_flight else ""
            _echo(f"{len(planned)} runs planned on {label} ({done} already finished{busy_text}); "
                       f"{pool.describe(per_job)}")
        busy = pool.run([by_key[k] for k in retry], runtime, source, runs_dir, data_path) or []
        waiting = state.in_flight + [job.run_key for job in busy]
        for key in waiting:
            lock = run_lock_path(runs_dir / key)
            _echo(f"waiting for {by_key[key].label}, trained by {holder(lock) or 'another process'}", err=True)
            claim(lock, stamp=False).release()  # returns once the owner is done (or dead)
        candidates, first = waiting, False


def read_planned(planned: list[Job], runs_dir: Path) -> list:
    """The planned runs' records; a run damaged since it was trained is left out with one line."""
    from ftmed_core.records import RecordDamaged, read_record

    records = []
    for job in planned:
        try:
            record = read_record(runs_dir / job.run_key)
        except RecordDamaged as exc:
            _echo(f"left out of the report: {exc}", err=True)
            continue
        if record is not None:
            records.append(record)
    return records

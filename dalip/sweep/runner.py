"""Running a sweep: every variant x seed in ``DIR/<variant>/seed<k>/`` via the training recipe.

On a CPU (or one GPU) the runs go one after another in this process; with
several visible GPUs each run is a ``dalip train`` subprocess pinned to one GPU
(``CUDA_VISIBLE_DEVICES``), one run per GPU at a time. A run with an
``eval.json`` is finished and skipped; one with a ``checkpoint.pt`` resumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from dalip.errors import ConfigError
from dalip.runs.config import TrainConfig, config_to_dict, save_config
from dalip.sweep.spec import SMOKE_OVERRIDES, SweepSpec
from dalip.train import train
from dalip.train.frozen_cache import FrozenCachePool

__all__ = ["Run", "plan_runs", "run_sweep"]


@dataclass
class Run:
    """One training run of a sweep."""

    variant: str
    seed: int
    folder: Path
    config: TrainConfig

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    @property
    def finished(self) -> bool:
        return (self.folder / "eval.json").is_file()

    @property
    def started(self) -> bool:
        return (self.folder / "checkpoint.pt").is_file()


def _normalised(tree: dict) -> dict:
    return yaml.safe_load(yaml.safe_dump(tree, sort_keys=True))


def _check_same_config(run: Run) -> None:
    """A restarted sweep must not mix runs of a different config into one folder."""
    saved = run.folder / "config.yaml"
    if not saved.is_file():
        return
    if _normalised(yaml.safe_load(saved.read_text())) != _normalised(config_to_dict(run.config)):
        raise ConfigError(
            f"{saved} holds a different config than the sweep now asks for (was the sweep file, --smoke or an "
            f"override changed?); delete {run.folder} or use another --output"
        )


def plan_runs(
    spec: SweepSpec, output: Path, seeds: list[int] | None = None, smoke: bool = False,
    overrides: list[str] | None = None, variants: list[str] | None = None,
) -> list[Run]:
    """Every (variant, seed) run with its resolved config; checks restarted folders."""
    chosen = variants or list(spec.variants)
    extra = (list(SMOKE_OVERRIDES) if smoke else []) + list(overrides or [])
    runs = [
        Run(v, s, output / v / f"seed{s}", spec.config(v, s, extra))
        for v in chosen
        for s in (seeds or spec.seeds)
    ]
    for run in runs:
        _check_same_config(run)
    return runs


def _visible_gpus() -> list[str]:
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: run on the CPU
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in listed.split(",") if g.strip()] if listed else [str(i) for i in range(count)]
    return ids[:count]


def _train_in_process(run: Run, frozen_caches: FrozenCachePool | None = None) -> None:

    train(run.config, run.folder, resume=True, frozen_caches=frozen_caches)


def _train_command(run: Run) -> list[str]:
    save_config(run.config, run.folder / "config.yaml")
    return [sys.executable, "-m", "dalip.cli", "train", "--config", str(run.folder / "config.yaml"),
            "--output", str(run.folder), "--resume"]


def _run_parallel(todo: list[Run], gpus: list[str], report: Callable[[Run, str], None]) -> list[str]:
    """One subprocess per GPU at a time; returns the names of failed runs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                      os.environ.get("PYTHONPATH")]))}
    pending, active, failed = list(todo), {}, []
    while pending or active:
        for gpu in [g for g in gpus if g not in active]:
            if not pending:
                break
            run = pending.pop(0)
            run.folder.mkdir(parents=True, exist_ok=True)
            log = open(run.folder / "train.log", "a")  # noqa: SIM115 - closed when the run ends
            proc = subprocess.Popen(_train_command(run), env={**env, "CUDA_VISIBLE_DEVICES": gpu},
                                    stdout=log, stderr=subprocess.STDOUT)
            active[gpu] = (run, proc, log, time.perf_counter())
            report(run, f"started on GPU {gpu} (log: {run.folder / 'train.log'})")
        time.sleep(1.0)
        for gpu, (run, proc, log, start) in list(active.items()):
            if proc.poll() is None:
                continue
            log.close()
            del active[gpu]
            if proc.returncode == 0 and run.finished:
                report(run, f"done in {time.perf_counter() - start:.0f} s")
            else:
                failed.append(run.name)
                report(run, f"FAILED (exit {proc.returncode}); see {run.folder / 'train.log'}")
    return failed


def run_sweep(runs: list[Run], gpus: list[str] | None = None) -> list[str]:
    """Train every unfinished run; returns the names of the runs that failed."""
    todo = [r for r in runs if not r.finished]
    total = len(runs)
    index = {r.name: i + 1 for i, r in enumerate(runs)}

    def report(run: Run, message: str) -> None:
        print(f"[sweep {index[run.name]}/{total}] {run.name}: {message}", flush=True)

    for run in runs:
        if run.finished:
            report(run, "finished earlier (eval.json exists), skipped")
    gpus = _visible_gpus() if gpus is None else gpus
    if len(gpus) > 1 and todo:
        return _run_parallel(todo, gpus, report)

    failed, frozen_caches = [], FrozenCachePool()  # model.cache_frozen runs on the same towers build it once
    for run in todo:
        report(run, "resuming from its checkpoint" if run.started else "training")
        start = time.perf_counter()
        try:
            _train_in_process(run, frozen_caches)
        except Exception as err:  # noqa: BLE001 - one broken run must not stop the sweep
            failed.append(run.name)
            report(run, f"FAILED: {type(err).__name__}: {err}")
            continue
        report(run, f"done in {time.perf_counter() - start:.0f} s")
    return failed

"""The training loop: ``train(config, output)``.

One optimizer step = ``accum_steps`` micro-batches. The data order, the
augmentation of every sample and the model's dropout are functions of the seed
and the step, and every checkpoint stores the RNG state, so a resumed run
produces the same subsequent losses as an uninterrupted one (on CPU).

The run's parts are built by `dalip.train.builders`; `Trainer` holds them and
runs the steps, logging, checkpoints and evaluations of one call of `train`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dalip.errors import NonFiniteLossError, RunFolderError
from dalip.models import get_tokenizer
from dalip.pooling import value_checks
from dalip.runs.checkpoint import (
    capture_rng,
    list_checkpoints,
    load_training_checkpoint,
    restore_rng,
    save_training_checkpoint,
)
from dalip.runs.config import TrainConfig, config_to_dict, save_config
from dalip.runs.evaluate import evaluate_run
from dalip.runs.folder import RunLock, check_resume_config, claim_run_folder, discard_unstarted_run
from dalip.runs.model import build_model
from dalip.train.batches import RunData, TrainBatches, build_data
from dalip.train.builders import build_loss, build_optimizer, build_scheduler, set_train_mode
from dalip.train.distributed import DistInfo, init_distributed
from dalip.train.frozen_cache import CachedTowersForward, FrozenCachePool, FrozenTowerCache
from dalip.train.metrics_log import METRICS, MetricsLog, read_metrics
from dalip.train.parallel import (
    load_optimizer_state,
    model_state,
    optimizer_state,
    unsharded_model,
    wrap_model,
)
from dalip.train.plots import plot_run
from dalip.train.precision import build_scaler, prepare_precision
from dalip.train.step import StepStats, train_step

__all__ = ["Trainer", "build_model", "build_optimizer", "train", "train_step"]


NOT_DIVERGED = torch.iinfo(torch.int64).max
_ADVICE = "lower optim.lr / optim.head_lr, set optim.grad_clip, or use run.precision=fp32"


def _divergence(diverged: torch.Tensor) -> NonFiniteLossError | None:
    """The error for the on-device first-diverged-step flag, agreed by every process (the earliest)."""
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(diverged, op=torch.distributed.ReduceOp.MIN)
    step = int(diverged.item())
    if step == NOT_DIVERGED:
        return None
    return NonFiniteLossError(f"non-finite loss at step {step} (NaN/Inf); the run stopped there without saving "
                              f"or evaluating it, and the checkpoints written before are kept: {_ADVICE}")


def _check_finite_weights(state: dict, step: int) -> None:
    """Raise `NonFiniteLossError` when a parameter or buffer holds NaN/Inf (one host read, before a save)."""
    tensors = [t for t in state.values() if t.is_floating_point()]
    if tensors and not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
        bad = [name for name, t in state.items() if t.is_floating_point() and not t.isfinite().all()]
        raise NonFiniteLossError(f"non-finite weights after step {step} ({', '.join(bad[:3])}"
                                 f"{', ...' if len(bad) > 3 else ''}); not saved, the checkpoints written "
                                 f"before are kept: {_ADVICE}")


def summed_over_ranks(window: StepStats) -> dict[str, float]:
    """The window's loss, loss parts, images and skipped samples summed over every rank (one host read)."""
    keys = ["loss", *(f"loss/{k}" for k in sorted(window.parts)), "images", "skipped"]
    values = [window.loss.float(), *(window.parts[k].float() for k in sorted(window.parts)),
              torch.tensor(float(window.images), device=window.loss.device),
              torch.tensor(float(window.skipped), device=window.loss.device)]
    totals = torch.stack([v.reshape(()) for v in values])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    return dict(zip(keys, totals.tolist()))


def all_ranks(value: Any) -> list:
    """``value`` of every rank, by rank (a picklable object; one collective when several processes run)."""
    if not torch.distributed.is_initialized():
        return [value]
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def data_position(state: dict, rank: int, config: TrainConfig) -> dict:
    """This rank's data position in a checkpoint (older checkpoints: the count of whole micro-batches)."""
    if "data" in state:
        positions = state["data"]
        if len(positions) <= rank:
            raise RunFolderError(f"the checkpoint holds the data positions of {len(positions)} process(es); resume "
                                 f"with as many (this is rank {rank})")
        return positions[rank]
    micro = int(state.get("micro", state["step"] * config.optim.accum_steps))
    return {"position": micro * config.data.batch_size}


def _raise_on_every_rank(error: Exception | None, dist_info: DistInfo, output: Path) -> None:
    """Raise ``error`` of the main process in every process (the others would wait for it forever)."""
    if torch.distributed.is_initialized():
        flag = torch.tensor([0 if error is None else 1], device=dist_info.device)
        torch.distributed.all_reduce(flag)
        if flag.item() and error is None:
            error = RunFolderError(f"the main process refused the run folder {output} (see its error)")
    if error is not None:
        raise error


class Trainer:
    """One call of `train` in a claimed run folder: the run's parts, its state, and the loop.

    Args:
        config: the resolved config.
        output: the run folder (claimed and locked by `train`).
        resume: continue from the newest intact checkpoint in ``output``.
    """

    def __init__(self, config: TrainConfig, output: Path, resume: bool,
                 frozen_caches: FrozenCachePool | None = None) -> None:
        self.config, self.output = config, output
        self.dist = init_distributed(config.distributed.backend)
        output.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.run.seed)
        self.model = prepare_precision(build_model(config).to(self.dist.device), config)  # pure_bf16: bf16 weights
        self.scaler = build_scaler(config, self.dist.device)  # fp16: a GradScaler
        self.tokenizer = get_tokenizer(config.model.name)
        self.loss_fn = build_loss(config)
        self.data: RunData = build_data(config, self.dist, self.model, keyed=config.model.cache_frozen,
                                        tokenizer=self.tokenizer)
        self.step, self.metrics = 0, []
        state = self._resume() if resume else None
        self.first_step = self.step  # a failure before this call's first step leaves no run behind
        self.frozen = self._build_frozen_cache(frozen_caches) if config.model.cache_frozen else None
        self.micro_batches: TrainBatches = self.data.train  # exactly data.batch_size readable samples each
        self.log = self._open_log() if self.dist.is_main else None
        self.net = wrap_model(self.model if self.frozen is None else CachedTowersForward(self.model), config, self.dist)
        self.optimizer = build_optimizer(self.model, config)  # after wrap_model: FSDP replaces the parameters
        self.scheduler = build_scheduler(self.optimizer, config)
        if state is not None:
            load_optimizer_state(self.model, self.optimizer, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])

    # ------------------------------------------------------------------ set-up
    def _resume(self) -> dict | None:
        """Restore the newest intact checkpoint (corrupt ones were set aside) and the data position."""
        found = list_checkpoints(self.output)
        if not found:
            return None
        state = load_training_checkpoint(found[0])
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])
        rng = state["rng"]  # per rank; older checkpoints hold rank 0's only
        restore_rng(rng[self.dist.rank % len(rng)] if isinstance(rng, list) else rng)
        self.metrics = read_metrics(self.output / METRICS, self.step)
        if self.dist.is_main:
            print(f"resumed from {found[0]} at step {self.step}/{self.config.optim.steps}")
        self.data.train.load_state_dict(data_position(state, self.dist.rank, self.config))
        return state

    def _build_frozen_cache(self, pool: FrozenCachePool | None) -> FrozenTowerCache:
        """``model.cache_frozen``: both frozen towers over every training sample, once (after a resume's weights).

        With a ``pool`` (runs of one process), an earlier run's cache of the same frozen towers and data is reused.
        """
        args = (self.model, self.data.train_set, self.tokenizer, self.config, self.dist.device)
        cache = (pool.cache_for(*args, progress=self.dist.is_main) if pool is not None
                 else FrozenTowerCache.build(*args, progress=self.dist.is_main))
        if self.dist.is_main:
            print(cache.summary(), flush=True)
        return cache

    def _open_log(self) -> MetricsLog:
        config = self.config
        save_config(config, self.output / "config.yaml")
        wandb = {"project": config.run.wandb_project, "name": config.run.wandb_name,
                 "config": config_to_dict(config)} if config.run.wandb else None
        return MetricsLog(self.output, self.metrics, config.run.tensorboard, wandb)

    # ---------------------------------------------------------------- per step
    def save_checkpoint(self) -> None:
        """Checkpoint the run (never a diverged model; only the main process writes)."""
        model, optimizer = model_state(self.model), optimizer_state(self.model, self.optimizer)  # every rank
        _check_finite_weights(model, self.step)  # every rank (same weights)
        data = all_ranks(self.micro_batches.state_dict())  # each rank's own data position
        rng = all_ranks(capture_rng())
        if self.dist.is_main:
            state = {
                "model": model,
                "optimizer": optimizer,
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "data": data,  # per rank: where its next batch starts (`TrainBatches.state_dict`)
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
                "rng": rng,  # per rank (each draws its own dropout)
                "config": config_to_dict(self.config),
            }
            save_training_checkpoint(state, self.output, self.config.run.keep_checkpoints)

    def evaluate(self) -> None:
        """The ``eval.every`` evaluation into ``eval_step<N>.json`` and the loggers (main process; the others wait)."""
        model = unsharded_model(self.model, self.config)  # every rank
        if self.dist.is_main:
            results = evaluate_run(model, self.tokenizer, self.data.eval_sets, self.config,
                                   self.output / f"eval_step{self.step}.json", self.data.zero_shot)
            self.log.write_eval(self.step, results)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    def log_window(self, window: StepStats, elapsed: float) -> dict | None:
        """Write one metrics row for the steps of ``window``, summed over every rank (one host sync).

        Every rank calls it (the sums are a collective); the main process writes and returns the row.
        """
        totals = summed_over_ranks(window)
        if not self.dist.is_main:
            return None
        lrs, world = self.scheduler.get_last_lr(), self.dist.world_size
        n = max(window.steps, 1)
        images = totals.pop("images")
        row = {
            "step": self.step,
            **{key: value / (n * world) for key, value in totals.items() if key != "skipped"},  # means over ranks
            "lr": lrs[0],
            "head_lr": lrs[-1],
            "logit_scale": self.model.clip.logit_scale.exp().item(),
            **({"alpha": self.model.alpha} if self.model.alpha_logit is not None else {}),
            "images_per_s": images / max(elapsed, 1e-9),  # all ranks together
            "images_per_s_per_rank": images / world / max(elapsed, 1e-9),
            "skipped": int(totals["skipped"]),  # unreadable samples replaced, all ranks
        }
        if self.dist.device.type == "cuda":  # peak since the start of the run, this process
            row["max_memory_gib"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**30
        self.log.write(row)
        return row

    def _reads_values(self, step: int, last: bool) -> bool:
        """Whether this step logs, checkpoints or evaluates (it reads values anyway)."""
        run, every = self.config.run, self.config.eval.every
        return step % run.log_every == 0 or step % run.checkpoint_every == 0 or last or bool(every and step % every == 0)

    # -------------------------------------------------------------------- loop
    def run(self, stop_after: int | None = None) -> dict:
        """Train up to ``optim.steps`` (or ``stop_after`` more steps), then evaluate at the end."""
        steps = self.config.optim.steps
        target = steps if stop_after is None else min(steps, self.step + stop_after)
        bar = tqdm(total=steps, initial=self.step, desc="train", unit="step", disable=not self.dist.is_main)
        try:
            with value_checks(self.config.run.value_checks):
                skipped = self._steps(target, bar)
            if skipped:
                where = f"rank {self.dist.rank}: " if self.dist.world_size > 1 else ""
                print(f"{where}replaced {skipped} unreadable samples in this call (the first are named in the "
                      "warnings above; metrics.jsonl counts every rank)")
            results: dict = {}
            model = unsharded_model(self.model, self.config) if self.step == steps else None  # every rank
            if self.step == steps and self.dist.is_main:
                results = finish_run(model, self.tokenizer, self.data, self.config, self.output, self.metrics)
                self.log.write_eval(self.step, results)
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
        if self.step == steps and torch.distributed.is_initialized():
            torch.distributed.barrier()
        return results

    def _steps(self, target: int, bar: tqdm) -> int:
        """Optimizer steps up to ``target`` with their logging, checkpoints and evaluations; samples replaced."""
        config, skipped = self.config, 0
        window, window_start = StepStats.empty(self.dist.device), time.perf_counter()
        diverged = torch.full((), NOT_DIVERGED, device=self.dist.device)  # the first step with a non-finite loss
        while self.step < target:
            set_train_mode(self.model, config)
            stats = train_step(self.net, self.model, self.loss_fn, self.tokenizer, self.micro_batches,
                                self.optimizer, self.scheduler, config, self.dist, self.frozen, scaler=self.scaler)
            window.add(stats)
            self.step += 1
            skipped += stats.skipped  # this process's share; metrics.jsonl sums every rank
            bar.update(1)
            diverged = torch.where(torch.isfinite(stats.loss), diverged, diverged.clamp_max(self.step))
            last = self.step == target
            if self._reads_values(self.step, last) and (error := _divergence(diverged)) is not None:
                raise error
            if self.step % config.run.log_every == 0 or last:
                row = self.log_window(window, time.perf_counter() - window_start)
                window, window_start = StepStats.empty(self.dist.device), time.perf_counter()
                if row is not None:
                    bar.set_postfix(loss=f"{row['loss']:.3f}")
            if self.step % config.run.checkpoint_every == 0 or last:
                self.save_checkpoint()
            if config.eval.every and self.step % config.eval.every == 0 and self.step < config.optim.steps:
                self.evaluate()
        return skipped


def train(config: TrainConfig, output: str | Path, resume: bool = False, stop_after: int | None = None,
          overwrite: bool = False, frozen_caches: FrozenCachePool | None = None) -> dict:
    """Train, checkpoint, evaluate; returns the evaluation results (main process).

    A folder that already holds a run is refused unless ``resume`` or ``overwrite``
    is given, and ``output/.lock`` keeps a second process from writing the same run
    (`dalip.runs.folder`). A resumed run must keep every setting that alters
    it (`dalip.runs.folder.check_resume_config`).

    Args:
        config: the resolved config.
        output: run folder: ``config.yaml``, ``metrics.jsonl``, ``checkpoint.pt`` (the newest;
            older ones ``checkpoint-step<N>.pt``, see ``run.keep_checkpoints``),
            ``eval.json``, ``training.png``.
        resume: continue from the newest intact checkpoint in ``output`` when there is one.
        stop_after: stop (with a checkpoint) after this many optimizer steps in
            this call, without the final evaluation (for tests and job limits).
        overwrite: delete the run already in ``output`` (its own files only) and start again.
        frozen_caches: with ``model.cache_frozen``, a `FrozenCachePool` shared by the runs of
            this process: a run with the same frozen towers and data as an earlier one reuses
            its cache (``dalip sweep`` passes one to its in-process runs).

    Raises:
        RunFolderError: the folder holds a run (without ``resume`` / ``overwrite``), another
            process writes it, or ``resume`` asks for changed settings (all listed).
        CorruptCheckpointError: ``resume`` found checkpoints, none of them intact.
    """
    dist_info = init_distributed(config.distributed.backend)
    output = Path(output)
    lock, error, created = RunLock(output), None, not output.exists()
    if dist_info.is_main:
        try:
            lock.acquire()
            try:
                claim_run_folder(output, resume, overwrite)
                if resume:
                    check_resume_config(output, config)
            except BaseException:
                lock.release()
                raise
        except ValueError as err:  # RunFolderError, CorruptCheckpointError, ConfigError
            error = err
    _raise_on_every_rank(error, dist_info, output)
    trainer = None
    try:
        trainer = Trainer(config, output, resume, frozen_caches)
        return trainer.run(stop_after)
    except BaseException:
        unstarted = trainer is None or trainer.step == trainer.first_step
        if dist_info.is_main and unstarted and discard_unstarted_run(output, created):
            print(f"the run failed before its first step: {output} is left as it was (nothing to resume)", flush=True)
        raise
    finally:
        if dist_info.is_main:
            lock.release()


def finish_run(model: Any, tokenizer: Any, data: Any, config: TrainConfig, output: Path, metrics: list[dict]) -> dict:
    """End of training: evaluate, write ``eval.json``, draw ``training.png``."""
    results = evaluate_run(model, tokenizer, data.eval_sets, config, output / "eval.json", data.zero_shot)
    print(f"plot written to {plot_run(metrics, results, output / 'training.png')}")
    return results

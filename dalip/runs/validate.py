"""Validating a config, one section at a time: component names against the registries, values in range.

Each ``validate_<section>`` raises a `ConfigError` whose message starts with the
offending key (``model.alpha ...``, ``optim.lr ...``), so the fix is obvious.

```python
validate(config)                   # every section, in order: model, loss, optim, data, run, eval
validate_optim(config.optim)       # one section
```
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from dalip.data import create_dataset, list_datasets
from dalip.data.labelled import TEMPLATE_SETS
from dalip.errors import ConfigError
from dalip.eval.encode import EMBEDDINGS
from dalip.eval.fusion import check_fusion_weights
from dalip.losses import FEATURE_KEYS, LOSSES, AlignmentLoss, create_loss
from dalip.models import list_models
from dalip.models.head_spec import HEAD_FIELDS
from dalip.models.names import CHECKPOINT_SUFFIXES, check_pretrained_tag
from dalip.pooling import POOLERS
from dalip.runs.config_schema import (
    DataConfig,
    DistributedConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "ACCUM_SCOPES",
    "PRECISIONS",
    "SCHEDULES",
    "STRATEGIES",
    "ZERO_SHOT_KEYS",
    "loss_options",
    "validate",
    "validate_cache_frozen",
    "validate_data",
    "validate_distributed",
    "validate_eval",
    "validate_loss",
    "validate_model",
    "validate_optim",
    "validate_run",
    "validate_zero_shot",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "pure_bf16")
"""``run.precision``: auto (bf16 autocast on a GPU, fp32 on a CPU), fp32, bf16 / fp16 autocast (fp16 with a
GradScaler), pure_bf16 (weights, gradients and optimizer state in bf16)."""
SCHEDULES = ("cosine", "const", "const-cooldown")
"""``optim.schedule``: the learning-rate shapes after the linear warmup (open_clip's ``--lr-scheduler``)."""
ACCUM_SCOPES = ("batch", "micro")
"""``optim.accum_scope``: what the contrastive loss scores over with ``optim.accum_steps`` > 1."""
STRATEGIES = ("ddp", "fsdp")
"""``distributed.strategy``: how several processes hold the model."""

ZERO_SHOT_KEYS = ("name", "path", "classnames", "templates", "img_key", "label_key", "separator")
"""The keys of an ``eval.zero_shot`` entry."""


def _require(checks: list[tuple[bool, str]]) -> None:
    """A `ConfigError` with the message of the first check that fails."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(config: TrainConfig) -> None:
    """Check component names and value ranges against the registries, section by section."""
    validate_model(config.model)
    validate_loss(config.loss, config.model)
    validate_optim(config.optim)
    validate_data(config.data)
    validate_cache_frozen(config.model, config.data)
    validate_run(config.run)
    validate_eval(config.eval, config.model)
    validate_distributed(config.distributed, config.model)


# ------------------------------------------------------------------ model
def _validate_model_name(m: ModelConfig) -> None:
    """``model.name`` (a known architecture, hub repo, folder or JSON file) and ``model.pretrained``."""
    schema = m.name.partition(":")[0] if m.name.startswith(("hf-hub:", "local-dir:")) else None
    if schema == "local-dir" and not Path(m.name[len("local-dir:"):]).is_dir():
        raise ConfigError(f"model.name: no such folder for {m.name!r}")
    if schema is None and not list_models(m.name) and not Path(m.name).is_file():
        raise ConfigError(f"model.name: unknown model {m.name!r} (an open_clip or dalip name, hf-hub:ORG/REPO, "
                          "local-dir:PATH or a JSON config; see dalip.list_models())")
    if m.pretrained is not None and Path(m.pretrained).suffix not in CHECKPOINT_SUFFIXES and not Path(m.pretrained).is_file():
        try:  # a hub tag: known for this architecture? (checked before any download)
            check_pretrained_tag(m.name, m.pretrained)
        except ValueError as err:
            raise ConfigError(f"model.pretrained: {err}") from None


def _model_error(err: ValueError) -> ConfigError:
    """A `HeadSpec` error as a config error: ``model.`` before the option it names and in its fix hints."""
    hints = re.sub(rf"(?<![\w.])({'|'.join(HEAD_FIELDS)})=", r"model.\1=", str(err))
    return ConfigError(f"model.{hints}")


def _validate_heads(m: ModelConfig) -> None:
    """The head options (`HeadSpec`): known poolers, per-tower shapes, alpha, each pooler's own options.

    Options stay as given when ``model.second_order`` changes (an override cannot know which
    ones belonged to the old pooler), so a pooler that does not take them is an error that
    says how to clear them.
    """
    for key, value in (("first_order", m.first_order), ("second_order", m.second_order)):
        for name in value.values() if isinstance(value, dict) else [value]:
            if name not in (None, "tower") and name not in POOLERS:
                raise ConfigError(f"model.{key}: unknown pooler {name!r}; known: {', '.join(POOLERS.list())}")
    try:
        m.heads.check()
    except ValueError as err:
        raise _model_error(err) from None


def validate_model(m: ModelConfig) -> None:
    """The ``model`` section: the architecture, its pretrained weights and the DALIP heads."""
    _validate_model_name(m)
    _validate_heads(m)


# ------------------------------------------------------------------ loss
def validate_loss(loss: LossConfig, m: ModelConfig) -> None:
    """The ``loss`` section: a registered loss taking these options; a learnable alpha is the loss's alpha."""
    if loss.name not in LOSSES:
        raise ConfigError(f"loss.name: unknown loss {loss.name!r}; known: {', '.join(LOSSES.list())}")
    try:
        LOSSES.check_options(loss.name, loss.options)
    except TypeError as err:
        raise ConfigError(f"loss.options: {err}") from None
    _require([
        (not m.alpha_learnable or loss.name == "distribution",
         f"model.alpha_learnable is trained by the 'distribution' loss, not {loss.name!r}"),
        (not m.alpha_learnable or "alpha" not in loss.options,
         "model.alpha_learnable: remove loss.options.alpha (the loss uses the model's learned alpha)"),
    ])
    try:
        built = create_loss(loss.name, **loss_options(loss, m))  # no weights: a few modules, built in microseconds
    except (TypeError, ValueError) as err:
        raise ConfigError(f"loss.options: {err}") from None
    second = _second_order_terms(built)
    if second and m.second_order is None:
        fix = "loss.options.alpha=1" if loss.name == "distribution" else f"loss terms without them ({', '.join(second)})"
        raise ConfigError(f"model.second_order is null (no second-order head), but loss {loss.name!r} aligns "
                          f"second-order features (term(s) {', '.join(map(repr, second))}): set loss.name=clip or "
                          f"{fix}, or give model.second_order a pooler (e.g. mbdc)")


def loss_options(loss: LossConfig, m: ModelConfig) -> dict[str, Any]:
    """The options the loss of a run is built with: ``loss.options``, and for ``distribution``
    ``model.alpha`` as its alpha unless ``loss.options.alpha`` is set."""
    options = dict(loss.options)
    if loss.name == "distribution":
        options.setdefault("alpha", m.alpha)
    return options


def _second_order_terms(built: AlignmentLoss) -> list[str]:
    """The terms of a built loss that read second-order features (pair losses of ``order="second"``,
    or losses reading one of their keys), by their part names."""
    keys = FEATURE_KEYS["second"]
    return [name.rpartition(".")[2] or type(built).__name__ for name, module in built.named_modules()
            if getattr(module, "order", None) == "second" or getattr(module, "key", None) in keys]


# ------------------------------------------------------------------ optim
def validate_optim(o: OptimConfig) -> None:
    """The ``optim`` section: rates, decay, eps, betas and clipping finite and in range (NaN would train silently)."""
    for key in ("lr", "head_lr", "weight_decay", "eps"):
        value = getattr(o, key)
        if not (_finite(value) and value >= 0):
            raise ConfigError(f"optim.{key} must be a finite number >= 0, got {value!r}")
    betas = o.betas
    if not (len(betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.98], got {betas!r}")
    if o.grad_clip is not None and not (_finite(o.grad_clip) and o.grad_clip >= 0):
        raise ConfigError(f"optim.grad_clip must be null/0 (no clipping) or a finite number > 0, got {o.grad_clip!r}")
    _require([
        (o.steps >= 1, "optim.steps must be >= 1"),
        (o.accum_steps >= 1, "optim.accum_steps must be >= 1"),
        (o.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (o.schedule in SCHEDULES, f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}"),
        (o.accum_scope in ACCUM_SCOPES,
         f"optim.accum_scope must be one of {', '.join(ACCUM_SCOPES)}, got {o.accum_scope!r}"),
        (o.cooldown_steps >= 0, "optim.cooldown_steps must be >= 0"),
        (o.schedule != "const-cooldown" or o.cooldown_steps >= 1,
         "optim.schedule=const-cooldown needs optim.cooldown_steps >= 1 (the steps of the final decay)"),
        (o.schedule != "const-cooldown" or o.cooldown_steps <= o.steps - o.warmup_steps,
         (f"optim.cooldown_steps ({o.cooldown_steps}) must fit after the warmup: at most optim.steps - "
          f"optim.warmup_steps = {o.steps - o.warmup_steps}")),
        (_finite(o.lr_cooldown_end) and o.lr_cooldown_end >= 0, "optim.lr_cooldown_end must be a finite number >= 0"),
        (_finite(o.cooldown_power) and o.cooldown_power > 0, "optim.cooldown_power must be a finite number > 0"),
        (all(isinstance(p, str) for p in o.no_decay), "optim.no_decay must be a list of name patterns (fnmatch)"),
    ])


# ------------------------------------------------------------------ data
def validate_data(data: DataConfig) -> None:
    """The ``data`` section: the dataset kind (required) and its options (no file is read here), loader sizes."""
    if not isinstance(data.spec, dict) or data.spec.get("dataset") is None:
        raise ConfigError(f"data.spec.dataset is required: the dataset kind, one of {', '.join(list_datasets())} "
                          "(e.g. data.spec: {dataset: csv, train: train.tsv}; the quickstart config uses twemoji)")
    try:
        create_dataset(dict(data.spec))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.spec: {err}") from None
    _require([
        (data.batch_size >= 1, "data.batch_size must be >= 1"),
        (data.workers >= 0, "data.workers must be >= 0"),
    ])


def validate_cache_frozen(m: ModelConfig, data: DataConfig) -> None:
    """``model.cache_frozen``: the cached outputs must be what training computes (locked towers, fixed samples)."""
    if not m.cache_frozen:
        return
    spec = create_dataset(dict(data.spec))  # checked by validate_data
    towers = (("image", m.lock_image, "unlocked_image_groups", m.unlocked_image_groups),
              ("text", m.lock_text, "unlocked_text_layers", m.unlocked_text_layers))
    problems = [f"the {t} tower is not fully locked (model.lock_{t}={str(lock).lower()}, model.{key}={n}): "
                f"set model.lock_{t}=true and model.{key}=0" for t, lock, key, n in towers if not lock or n]
    if spec.augmentation() is not None:
        problems.append("training augmentation is on (data.spec.augment is true, the default, or a mapping): every "
                        "epoch sees new crops of an image; set data.spec.augment=false")
    if spec.domain_fraction is not None:
        problems.append("data.spec.domain_fraction mixes two sources, redrawing the sample behind an index every "
                        "epoch; train on one source")
    if spec.kind == "wds":
        problems.append("webdataset shards (dataset: wds) are a stream without sample indices to cache by")
    if problems:
        raise ConfigError("model.cache_frozen: " + "; ".join(problems))


# ------------------------------------------------------------------ run
def validate_run(run: RunConfig) -> None:
    """The ``run`` section: precision and logging / checkpoint intervals."""
    _require([
        (run.precision in PRECISIONS,
         f"run.precision must be one of {', '.join(PRECISIONS)}, got {run.precision!r}"),
        (run.checkpoint_every >= 1, "run.checkpoint_every must be >= 1"),
        (run.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1"),
        (run.log_every >= 1, "run.log_every must be >= 1"),
    ])


# ------------------------------------------------------------------ eval
def validate_eval(evaluation: EvalConfig, m: ModelConfig) -> None:
    """The ``eval`` section: sizes, embeddings, zero-shot sets and fusion weights (some need second-order heads)."""
    _require([
        (evaluation.every >= 0, "eval.every must be >= 0 (0: only at the end)"),
        (evaluation.batch_size >= 1, "eval.batch_size must be >= 1"),
    ])
    _validate_embeddings(evaluation.embeddings, m)
    validate_zero_shot(evaluation.zero_shot)
    _validate_fusion(evaluation.fusion, m)


def _validate_embeddings(embeddings: list | None, m: ModelConfig) -> None:
    """``eval.embeddings``: known names; second / combined need a second-order head."""
    if embeddings is None:
        return
    if not embeddings:
        raise ConfigError(f"eval.embeddings: an empty list; give some of {', '.join(EMBEDDINGS)} or null (all)")
    unknown = [e for e in embeddings if e not in EMBEDDINGS]
    if unknown:
        raise ConfigError(f"eval.embeddings: unknown {unknown}; choose from {', '.join(EMBEDDINGS)}")
    needs_second = sorted(set(embeddings) - {"first"})
    if needs_second and m.second_order is None:
        raise ConfigError(f"eval.embeddings: {', '.join(needs_second)} need a second-order head "
                          "(model.second_order is null); use [first]")


def _validate_fusion(fusion: list | None, m: ModelConfig) -> None:
    """``eval.fusion``: weights in [0, 1], for a model with second-order heads."""
    if fusion is None:
        return
    try:
        check_fusion_weights(fusion)
    except ValueError as err:
        raise ConfigError(f"eval.fusion: {err}") from None
    if m.second_order is None:
        raise ConfigError("eval.fusion: fusion curves need second-order heads (model.second_order is null)")


def _zero_shot_name(entry: dict, where: str) -> str:
    """One ``eval.zero_shot`` entry checked (keys, files, template set); its set name."""
    unknown = sorted(set(entry) - set(ZERO_SHOT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {', '.join(ZERO_SHOT_KEYS)}")
    if not isinstance(entry.get("path"), str):
        raise ConfigError(f"{where}.path: an image folder or a CSV/TSV path is required")
    if not Path(entry["path"]).exists():
        raise ConfigError(f"{where}.path: not found: {entry['path']}")
    if entry.get("classnames") is not None and not Path(str(entry["classnames"])).is_file():
        raise ConfigError(f"{where}.classnames: file not found: {entry['classnames']}")
    templates = entry.get("templates")
    if templates is not None and str(templates) not in TEMPLATE_SETS and not Path(str(templates)).is_file():
        raise ConfigError(f"{where}.templates: {templates!r} is neither a file nor a named set "
                          f"({', '.join(TEMPLATE_SETS)})")
    path = Path(entry["path"])
    return str(entry.get("name") or (path.name if path.is_dir() else path.stem))


def validate_zero_shot(entries: list) -> None:
    """``eval.zero_shot``: mappings with an existing ``path``, known keys, unique names."""
    names: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"eval.zero_shot[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping like {{path: DIR_OR_CSV}}, got {entry!r}")
        name = _zero_shot_name(entry, where)
        if name in names:
            raise ConfigError(f"{where}: the name {name!r} is taken by eval.zero_shot[{names[name]}]; set 'name'")
        names[name] = i


# ------------------------------------------------------------------ distributed
def _backend_names(backend: str) -> list[str]:
    """The backend names of ``distributed.backend``: ``"gloo"`` or per device ``"cpu:gloo,cuda:nccl"``."""
    return [part.split(":")[-1].strip().lower() for part in backend.split(",")]


def validate_distributed(d: DistributedConfig, m: ModelConfig) -> None:
    """The ``distributed`` section: a known strategy and backend, and no FSDP with what it cannot shard."""
    known = [b for b in torch.distributed.Backend.backend_list if b != "undefined"]
    backend_ok = d.backend is None or (isinstance(d.backend, str) and d.backend != ""
                                       and all(name in known for name in _backend_names(d.backend)))
    _require([
        (d.strategy in STRATEGIES, f"distributed.strategy must be one of {', '.join(STRATEGIES)}, got {d.strategy!r}"),
        (backend_ok, (f"distributed.backend must be null (nccl on GPUs, gloo on CPUs), one of {', '.join(known)} "
                      f"or one per device like cpu:gloo,cuda:nccl; got {d.backend!r}")),
        (not (d.strategy == "fsdp" and m.compile),
         "distributed.strategy=fsdp with model.compile is not supported; set model.compile=false"),
        (not (d.strategy == "fsdp" and m.channels_last),
         ("distributed.strategy=fsdp with model.channels_last: FSDP2 shards only contiguous (NCHW) weights; "
          "set model.channels_last=false")),
        (not (d.strategy == "fsdp" and m.cache_frozen),
         ("distributed.strategy=fsdp with model.cache_frozen: the towers are frozen and cached and only the small "
          "heads train, so there is nothing worth sharding; set distributed.strategy=ddp")),
    ])

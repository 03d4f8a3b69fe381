"""Training configuration: dataclasses, YAML files and ``key=value`` overrides.

A config is a YAML file with the sections below (every key optional); the
command line overrides any leaf with ``section.key=value`` (values parsed as
YAML, so ``optim.lr=3e-4``, ``model.second_order=null``,
``model.second_options={heads: 2}`` work). Unknown keys, wrong types and unknown
component names fail with a message naming the problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dalip.data import create_dataset
from dalip.data.labelled import TEMPLATE_SETS
from dalip.errors import ConfigError
from dalip.eval.encode import EMBEDDINGS
from dalip.eval.fusion import check_fusion_weights
from dalip.io import atomic_write_text
from dalip.losses import LOSSES
from dalip.models import list_models
from dalip.models.dalip_model import _per_tower
from dalip.models.factory import CHECKPOINT_SUFFIXES, check_pretrained_tag
from dalip.pooling import POOLERS

__all__ = [ "DataConfig", "EvalConfig", "LossConfig", "ModelConfig", "OptimConfig", "RunConfig",
    "TrainConfig", "config_from_dict", "config_to_dict", "list_configs", "load_config",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelConfig:
    """The model: an open_clip architecture or dalip config with DALIP heads."""

    name: str = "effl0-minilm"
    pretrained: str | None = None  # towers: an open_clip hub tag of `name` (laion2b_s34b_b88k, openai) or a .pt/.safetensors file
    pretrained_strict: bool = True  # a pretrained file must fill every tower weight (false: load what matches)
    first_order: Any = "tower"  # "tower" | pooler name | {image: ..., text: ...}
    second_order: Any = "mbdc"  # pooler name | null | {image: ..., text: ...}
    second_options: dict = field(default_factory=dict)
    alpha: float = 0.5  # first-order weight of the combined embedding (and of the loss)
    separate_second_scale: bool = False
    alpha_learnable: bool = False  # learn alpha as sigmoid(logit), starting at `alpha` (head learning rate)
    lock_image: bool = False  # LiT-style: freeze the image tower ...
    unlocked_image_groups: int = 0  # ... except its last N layer groups (timm trunks, open_clip ViTs)
    lock_text: bool = False
    unlocked_text_layers: int = 0
    cache_frozen: bool = False  # both towers locked, no augmentation: compute their outputs once, reuse every epoch
    grad_checkpointing: bool = False
    compile: bool = False
    channels_last: bool = False  # NHWC conv weights: ~2x faster CNN towers on a CPU (no effect on ViTs' tokens)
    open_clip: dict = field(default_factory=dict)  # extra open_clip.create_model kwargs


@dataclass
class LossConfig:
    """The training loss: a registered loss name and its options."""

    name: str = "distribution"
    options: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    """Data: dataset spec (passed to ``dalip.data.DataSpec``) and loader settings."""

    spec: dict = field(default_factory=dict)  # fields of dalip.data.DataSpec
    batch_size: int = 64
    workers: int = 2


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay; a separate rate for the new heads."""

    lr: float = 5e-5
    head_lr: float = 1e-3  # the new heads, and parameters matching head_patterns
    head_patterns: list = field(default_factory=list)  # e.g. ["clip.visual.head.*"]: a fresh projection
    weight_decay: float = 0.1
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 20
    steps: int = 300
    accum_steps: int = 1
    grad_clip: float | None = 1.0


@dataclass
class RunConfig:
    """Run-level settings: seed, precision, logging and checkpoints."""

    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2  # checkpoint.pt (newest) + checkpoint-step<N>.pt; resume falls back to an intact one
    tensorboard: bool = False
    wandb: bool = False  # also log to Weights & Biases (pip install 'dalip[wandb]'; WANDB_MODE=offline works)
    wandb_project: str = "dalip"
    wandb_name: str | None = None  # default: the run folder's name
    value_checks: bool = False  # data-dependent pooler input checks (sync the GPU)


@dataclass
class EvalConfig:
    """Evaluation at the end of training and in ``dalip eval``."""

    batch_size: int = 128
    embeddings: list | None = None  # default: first, second, combined (when available)
    every: int = 0  # also evaluate every N steps (0: only at the end)
    fusion: list | None = None  # weights a: also score a * s_first + (1 - a) * s_second (curve + plot)
    # zero-shot sets of labelled images: [{path: DIR_OR_CSV, name, classnames, templates, img_key, label_key, separator}]
    zero_shot: list = field(default_factory=list)


@dataclass
class TrainConfig:
    """The whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ------------------------------------------------------------------ parsing
def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or annotation)


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(values).__name__}: {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {path!r}.{hint} Valid keys: {', '.join(names)}")
        annotation = hints[key]
        if isinstance(value, str) and _type_ok(1.0, annotation) and not _type_ok(value, annotation):
            try:  # YAML 1.1 reads 3e-4 (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value or {}, path)
        elif not _type_ok(value, annotation):
            expected = getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
            raise ConfigError(f"config key {path!r} expects {expected}, got {type(value).__name__} {value!r}")
        else:
            kwargs[key] = float(value) if annotation is float else value
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """``["optim.lr=1e-4", "model.second_order=null"]`` -> nested dict (values parsed as YAML)."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse value {raw!r}: {err}") from None
        _set_path(tree, key.strip(), value)
    return tree


def _other_dataset(base: Any, update: dict) -> bool:
    """A ``data.spec`` update naming another dataset kind: the base's kind options do not carry over."""
    return isinstance(base, dict) and "dataset" in update and update["dataset"] != base.get("dataset", "twemoji")


def _merge(base: dict, update: dict, path: str = "") -> dict:
    out = dict(base)
    for key, value in update.items():
        where = f"{path}.{key}" if path else str(key)
        replace = key == "second_options" or (where == "data.spec" and _other_dataset(out.get(key), value))
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not replace:
            out[key] = _merge(out[key], value, where)
        else:
            out[key] = value
    return out


def list_configs() -> list[str]:
    """Names of the configs shipped with the package (``dalip/configs/*.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


PATH_KEYS = (("model", "name"), ("model", "pretrained"), ("data", "spec", "train"), ("data", "spec", "val"))


def _resolve_paths(data: dict, folder: Path) -> None:
    """File paths in a config are relative to the config's folder when a file is there."""
    evaluation = data.get("eval")
    entries = evaluation.get("zero_shot") if isinstance(evaluation, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        for key in ("path", "classnames", "templates"):  # eval.zero_shot entries: folders and files
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and not Path(value).is_absolute() and (folder / value).exists():
                entry[key] = str((folder / value).resolve())
    for keys in PATH_KEYS:
        node = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(keys[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and not Path(value).is_absolute() and (folder / value).is_file():
            node[keys[-1]] = str((folder / value).resolve())


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (not last-wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (a later one would silently replace it)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml_file(path: Path) -> Any:
    """The YAML document of a file; unreadable, non-UTF-8 or malformed YAML and duplicate keys are a `ConfigError`."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None


def _read_yaml(name_or_path: str | Path, chain: tuple[Path, ...] = ()) -> dict:
    path = Path(name_or_path)
    if not path.is_file():
        shipped = CONFIG_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise ConfigError(
                f"config {str(name_or_path)!r} is neither a file nor a shipped config ({', '.join(list_configs())})"
            )
        path = shipped
    if path.resolve() in chain:  # `base:` cycle: a -> b -> a would recurse forever
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: 'base:' cycle: {cycle}")
    data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    _resolve_paths(data, path.parent)
    base = data.pop("base", None)  # configs compose: `base: quickstart` plus small overrides
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a config path or shipped name, got {base!r}")
        base_path = (path.parent / base) if (path.parent / base).is_file() else base
        data = _merge(_read_yaml(base_path, (*chain, path.resolve())), data)
    return data


def config_from_dict(data: dict, overrides: list[str] | None = None) -> TrainConfig:
    """A validated config from a nested dict (e.g. the one stored in a checkpoint)."""
    config = _build(TrainConfig, _merge(data, parse_overrides(overrides or [])), "")
    validate(config)
    return config


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a config (shipped name or YAML path), apply overrides, validate.

    Raises:
        ConfigError: unknown key, wrong type, unknown component, malformed YAML,
            missing file; the message names the problem.
    """
    return config_from_dict(_read_yaml(name_or_path) if name_or_path is not None else {}, overrides)


def validate(config: TrainConfig) -> None:
    """Check component names and value ranges against the registries."""

    m = config.model
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
    for key, value in (("first_order", m.first_order), ("second_order", m.second_order)):
        names = value.values() if isinstance(value, dict) else [value]
        for name in names:
            if name not in (None, "tower") and name not in POOLERS:
                raise ConfigError(f"model.{key}: unknown pooler {name!r}; known: {', '.join(POOLERS.list())}")
    _validate_second_options(m)
    if config.loss.name not in LOSSES:
        raise ConfigError(f"loss.name: unknown loss {config.loss.name!r}; known: {', '.join(LOSSES.list())}")
    try:
        LOSSES.check_options(config.loss.name, config.loss.options)
    except TypeError as err:
        raise ConfigError(f"loss.options: {err}") from None
    _validate_optim(config.optim)
    _validate_embeddings(config)
    try:  # the dataset kind and its options (no file is read here)

        create_dataset(dict(config.data.spec))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.spec: {err}") from None
    _validate_cache_frozen(config)
    checks = [
        (0 <= m.alpha <= 1, "model.alpha must be in [0, 1]"),
        (not m.alpha_learnable or 0 < m.alpha < 1,
         f"model.alpha_learnable: the starting model.alpha must lie strictly inside (0, 1), got {m.alpha}"),
        (not m.alpha_learnable or m.second_order is not None,
         "model.alpha_learnable needs second-order heads (model.second_order is null)"),
        (not m.alpha_learnable or config.loss.name == "distribution",
         f"model.alpha_learnable is trained by the 'distribution' loss, not {config.loss.name!r}"),
        (not m.alpha_learnable or "alpha" not in config.loss.options,
         "model.alpha_learnable: remove loss.options.alpha (the loss uses the model's learned alpha)"),
        (config.optim.steps >= 1, "optim.steps must be >= 1"),
        (config.optim.accum_steps >= 1, "optim.accum_steps must be >= 1"),
        (config.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (config.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (config.data.workers >= 0, "data.workers must be >= 0"),
        (config.run.precision in ("auto", "bf16", "fp32"), "run.precision must be auto, bf16 or fp32"),
        (config.run.checkpoint_every >= 1, "run.checkpoint_every must be >= 1"),
        (config.run.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1"),
        (config.run.log_every >= 1, "run.log_every must be >= 1"),
        (config.eval.every >= 0, "eval.every must be >= 0 (0: only at the end)"),
        (config.eval.batch_size >= 1, "eval.batch_size must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    validate_zero_shot(config.eval.zero_shot)
    _validate_fusion(config)


def _validate_fusion(config: TrainConfig) -> None:
    """``eval.fusion``: weights in [0, 1], for a model with second-order heads."""
    if config.eval.fusion is None:
        return

    try:
        check_fusion_weights(config.eval.fusion)
    except ValueError as err:
        raise ConfigError(f"eval.fusion: {err}") from None
    if config.model.second_order is None:
        raise ConfigError("eval.fusion: fusion curves need second-order heads (model.second_order is null)")


def _validate_cache_frozen(config: TrainConfig) -> None:
    """``model.cache_frozen``: the cached outputs must be what training computes (locked towers, fixed samples)."""
    m = config.model
    if not m.cache_frozen:
        return

    spec = create_dataset(dict(config.data.spec))  # checked above
    towers = (("image", m.lock_image, "unlocked_image_groups", m.unlocked_image_groups),
              ("text", m.lock_text, "unlocked_text_layers", m.unlocked_text_layers))
    problems = [f"the {t} tower is not fully locked (model.lock_{t}={str(lock).lower()}, model.{key}={n}): "
                f"set model.lock_{t}=true and model.{key}=0" for t, lock, key, n in towers if not lock or n]
    if spec.augment:
        problems.append("training augmentation is on (data.spec.augment is true, the default): every epoch sees "
                        "new crops of an image; set data.spec.augment=false")
    if spec.domain_fraction is not None:
        problems.append("data.spec.domain_fraction mixes two sources, redrawing the sample behind an index every "
                        "epoch; train on one source")
    if spec.kind == "wds":
        problems.append("webdataset shards (dataset: wds) are a stream without sample indices to cache by")
    if problems:
        raise ConfigError("model.cache_frozen: " + "; ".join(problems))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate_optim(o: OptimConfig) -> None:
    """Learning rates, weight decay, eps, betas and clipping: finite and in range (NaN would train silently)."""
    for key in ("lr", "head_lr", "weight_decay", "eps"):
        value = getattr(o, key)
        if not (_finite(value) and value >= 0):
            raise ConfigError(f"optim.{key} must be a finite number >= 0, got {value!r}")
    betas = o.betas
    if not (len(betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.98], got {betas!r}")
    if o.grad_clip is not None and not (_finite(o.grad_clip) and o.grad_clip >= 0):
        raise ConfigError(f"optim.grad_clip must be null/0 (no clipping) or a finite number > 0, got {o.grad_clip!r}")


def _validate_second_options(m: ModelConfig) -> None:
    """``model.second_options`` against the signature of each tower's second-order pooler.

    Options stay as given when ``model.second_order`` changes (an override cannot know which
    ones belonged to the old pooler), so a pooler that does not take them is an error that
    says how to clear them.
    """

    try:
        poolers, options = _per_tower(m.second_order, "second_order"), _per_tower(m.second_options, "second_options")
    except ValueError as err:
        raise ConfigError(f"model.{err}") from None
    for tower, name in poolers.items():
        given = options[tower] or {}
        if name is None or not given:
            continue
        if not isinstance(given, dict):
            raise ConfigError(f"model.second_options: {tower} options must be a mapping, got {given!r}")
        valid = [p for p in POOLERS.valid_options(name) if p != "dim"]
        unknown = sorted(set(given) - set(valid) - {"dim"})
        if unknown:
            raise ConfigError(
                f"model.second_options: pooler {name!r} ({tower} tower) does not take {', '.join(unknown)} "
                f"(its options: {', '.join(valid)}). Options written for another pooler? Clear them with "
                f"model.second_options={{}} or give this pooler's own, e.g. model.second_options={{{valid[0]}: ...}}"
            )


def _validate_embeddings(config: TrainConfig) -> None:
    """``eval.embeddings``: known names; second / combined need a second-order head."""

    embeddings = config.eval.embeddings
    if embeddings is None:
        return
    if not embeddings:
        raise ConfigError(f"eval.embeddings: an empty list; give some of {', '.join(EMBEDDINGS)} or null (all)")
    unknown = [e for e in embeddings if e not in EMBEDDINGS]
    if unknown:
        raise ConfigError(f"eval.embeddings: unknown {unknown}; choose from {', '.join(EMBEDDINGS)}")
    needs_second = sorted(set(embeddings) - {"first"})
    if needs_second and config.model.second_order is None:
        raise ConfigError(f"eval.embeddings: {', '.join(needs_second)} need a second-order head "
                          "(model.second_order is null); use [first]")


ZERO_SHOT_KEYS = ("name", "path", "classnames", "templates", "img_key", "label_key", "separator")


def validate_zero_shot(entries: list) -> None:
    """``eval.zero_shot``: mappings with an existing ``path``, known keys, unique names."""

    names: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"eval.zero_shot[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping like {{path: DIR_OR_CSV}}, got {entry!r}")
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
        name = str(entry.get("name") or (path.name if path.is_dir() else path.stem))
        if name in names:
            raise ConfigError(f"{where}: the name {name!r} is taken by eval.zero_shot[{names[name]}]; set 'name'")
        names[name] = i


def config_to_dict(config: TrainConfig) -> dict:
    """Plain nested dict (YAML/JSON-safe) of a config."""
    return dataclasses.asdict(config)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML (atomically: a kill never leaves a torn ``config.yaml``)."""

    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))

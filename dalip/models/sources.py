"""Where a model's tower weights come from: one function per source, each building the open_clip model.

- `towers_from_config`: an open_clip config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``)
  or JSON file, freshly initialised;
- `towers_from_named_config`: a dalip config (`MODEL_CONFIGS`), its towers loaded from
  the Python packages that ship them;
- `towers_from_open_clip`: an open_clip architecture (with a hub tag or none) or an
  ``hf-hub:`` / ``local-dir:`` name, built and loaded by ``open_clip.create_model``;
- `apply_checkpoint`: a local checkpoint file loaded over any of them.

`build_towers` picks the source of a name; `add_heads` puts DALIP's heads on the towers.
A dalip export (the whole model) is loaded by `dalip.models.export_loading`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dalip.models.checkpoint import LoadReport, head_keys, load_checkpoint
from dalip.models.configs import MODEL_CONFIGS, quiet_transformers
from dalip.models.dalip_model import DALIPModel
from dalip.models.head_spec import HeadSpec
from dalip.models.hub import check_hub_access, hub_errors, hub_repo
from dalip.models.names import (
    check_pretrained_tag,
    is_open_clip_name,
    name_schema,
    open_clip_model_config,
    read_model_config,
)
from dalip.registry import UnknownComponentError

__all__ = [
    "FRESH", "INIT_SEED", "Towers", "add_heads", "apply_checkpoint", "build_open_clip", "build_towers", "seeded_init",
    "towers_from_config", "towers_from_named_config", "towers_from_open_clip", "untrained_notice",
]

FRESH = "fresh initialisation"
"""The source of towers built without weights."""


@dataclass(frozen=True)
class Towers:
    """An open_clip model built by one weight source, before the DALIP heads.

    Attributes:
        clip: the open_clip ``CLIP`` / ``CustomTextCLIP`` model.
        config: its open_clip model config (``embed_dim`` is the heads' output width E).
        source: where its weights came from (`LoadReport.source`).
        fresh: state-dict keys of ``clip`` that keep their (seeded) initialisation although the
            towers are pretrained, e.g. the projection of a pretrained trunk.
    """

    clip: nn.Module
    config: dict[str, Any]
    source: str
    fresh: tuple[str, ...] = ()


def build_open_clip(config: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised open_clip ``CLIP`` (``CustomTextCLIP`` for custom / Hugging Face text towers)."""
    import open_clip

    config = dict(config)
    custom = config.pop("custom_text", False) or "hf_model_name" in config.get("text_cfg", {})
    return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**config)


def _set_preprocess(clip: nn.Module, overrides: Mapping[str, Any]) -> None:
    """Give a dict-built model open_clip's full preprocess cfg (defaults, the tower's size, ``overrides``)."""
    import open_clip
    from open_clip.transform import PreprocessCfg

    cfg = {**dataclasses.asdict(PreprocessCfg()), "size": getattr(clip.visual, "image_size", 224), **overrides}
    open_clip.set_model_preprocess_cfg(clip, cfg)


@contextlib.contextmanager
def _without_log(*prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with a ``prefix`` during the block only (open_clip logs to root)."""

    def keep(record: logging.LogRecord) -> bool:
        """False for the records to drop."""
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def towers_from_config(config: Mapping[str, Any], open_clip_kwargs: Mapping[str, Any]) -> Towers:
    """An open_clip config dict (updated with ``open_clip_kwargs``), freshly initialised."""
    config = {**dict(config), **open_clip_kwargs}
    clip = build_open_clip(config)
    _set_preprocess(clip, {})
    return Towers(clip, config, FRESH)


def towers_from_named_config(name: str, pretrained_towers: bool, open_clip_kwargs: Mapping[str, Any]) -> Towers:
    """A dalip config (`MODEL_CONFIGS`), its towers loaded from their packages when ``pretrained_towers``."""
    named_model = MODEL_CONFIGS.create(name)
    config = {**named_model.build(pretrained_towers), **open_clip_kwargs}
    with quiet_transformers():  # MiniLM's unused BERT pooler weights are expected
        clip = build_open_clip(config)
    _set_preprocess(clip, named_model.preprocess)
    if not pretrained_towers:
        return Towers(clip, config, FRESH)
    named_model.load_towers(clip)
    return Towers(clip, config, f"packages of {name!r}", tuple(_around_trunks(clip)))


def _around_trunks(clip: nn.Module) -> list[str]:
    """Keys of the layers a pretrained trunk does not bring: a timm tower's outside its ``trunk``, a
    Hugging Face text tower's outside its ``transformer`` (their projections, e.g. ``visual.head.proj``)."""
    keys = []
    for tower, trunk in (("visual", "trunk"), ("text", "transformer")):
        module = getattr(clip, tower, None)
        if module is not None and hasattr(module, trunk) and (tower == "visual" or hasattr(module, "config")):
            keys += [f"{tower}.{k}" for k in module.state_dict() if not k.startswith(f"{trunk}.")]
    return keys


def towers_from_open_clip(
    name: str, hub_tag: str | None, *, pretrained_towers: bool, cache_dir: str | None, open_clip_kwargs: Mapping[str, Any]
) -> Towers:
    """``open_clip.create_model(name, pretrained=hub_tag)``: an architecture, or the weights of an
    ``hf-hub:`` / ``local-dir:`` name (none when not ``pretrained_towers``).

    Raises:
        ValueError: a hub tag unknown for the architecture (listing the valid ones), a tag
            given with an ``hf-hub:`` / ``local-dir:`` name, or ``pretrained`` in ``open_clip_kwargs``.
    """
    import open_clip

    kwargs = dict(open_clip_kwargs)
    if kwargs.pop("pretrained", None):
        raise ValueError("pass pretrained weights as the 'pretrained' argument")
    schema = name_schema(name)
    if hub_tag is not None:
        if schema:
            raise ValueError(f"{name!r} carries its own weights; pretrained={hub_tag!r} is not used with it")
        check_pretrained_tag(name, hub_tag)
    if not pretrained_towers:  # the architecture only: no checkpoint, no default tower weights
        kwargs = {"load_weights": False, "pretrained_image": False, "pretrained_text": False, **kwargs}
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    repo = hub_repo(name, hub_tag)
    what = f"{name}" if hub_tag is None else f"pretrained tag {hub_tag!r} of {name}"
    what += f" (hub repo {repo})" if repo and hub_tag is not None else ""
    if repo is not None:
        check_hub_access(what, repo, cache_dir)  # seconds, not open_clip's retries, without network
    quiet = ("Failed to download", "Failed initial config", *(() if pretrained_towers else ("No pretrained weights",)))
    with hub_errors(what), _without_log(*quiet):  # the error says it in one line
        clip = open_clip.create_model(name, pretrained=hub_tag, **kwargs)  # (weights follow: no warning)
        config = open_clip_model_config(name, **kwargs)
    source = FRESH
    if hub_tag is not None:
        source = f"open_clip.create_model({name!r}, pretrained={hub_tag!r}): the hub weights, loaded strictly"
    elif schema and pretrained_towers:
        source = f"open_clip.create_model({name!r}): the weights of that {schema} source, loaded strictly"
    return Towers(clip, config, source)


def build_towers(
    name_or_config: str | Path | Mapping[str, Any],
    hub_tag: str | None,
    *,
    pretrained_towers: bool,
    cache_dir: str | None,
    open_clip_kwargs: Mapping[str, Any],
) -> Towers:
    """The towers of any name `dalip.create_model` takes but a dalip export, from the name's own source.

    Raises:
        ValueError: a hub tag for a name that takes none, or one the architecture does not know.
        UnknownComponentError: no such model (lists the known names).
    """
    name = name_or_config
    if isinstance(name, (str, Path)) and str(name).endswith(".json"):
        name = read_model_config(name)
    if hub_tag is not None and (isinstance(name, Mapping) or name in MODEL_CONFIGS):
        raise ValueError(f"pretrained={hub_tag!r} is no checkpoint file; hub tags need an open_clip architecture name")
    if isinstance(name, Mapping):
        return towers_from_config(name, open_clip_kwargs)
    if name in MODEL_CONFIGS:
        return towers_from_named_config(name, pretrained_towers, open_clip_kwargs)
    if is_open_clip_name(name):
        return towers_from_open_clip(name, hub_tag, pretrained_towers=pretrained_towers, cache_dir=cache_dir,
                                     open_clip_kwargs=open_clip_kwargs)
    raise _unknown_model(name)


def _unknown_model(name: Any) -> UnknownComponentError:
    """The error for a name no source knows, listing dalip's configs and the first open_clip architectures."""
    import open_clip

    known = ", ".join(MODEL_CONFIGS.list()) + "; open_clip: " + ", ".join(open_clip.list_models()[:12]) + ", ..."
    return UnknownComponentError(f"unknown model {name!r}. Known: {known} (see dalip.list_models())")


def add_heads(towers: Towers, heads: HeadSpec) -> DALIPModel:
    """A `DALIPModel` of the towers with the ``heads``, whose outputs are ``(B, E)``, E the config's ``embed_dim``."""
    return DALIPModel(towers.clip, embed_dim=int(towers.config["embed_dim"]), **heads.as_kwargs())


def apply_checkpoint(model: DALIPModel, checkpoint: str | Path | None, *, strict: bool, towers: Towers) -> LoadReport:
    """Load a local checkpoint file over the model (`load_checkpoint`), or report the towers' own source.

    Without a file the report lists the head tensors that start fresh.

    Raises:
        PretrainedMismatchError: ``strict`` and the file does not fit the towers.
    """
    if checkpoint is None:
        return LoadReport(source=towers.source, fresh=[f"clip.{k}" for k in towers.fresh] + head_keys(model))
    return load_checkpoint(model, checkpoint, strict=strict)


INIT_SEED = 0
"""The seed of the layers a model builds untrained (`create_model`'s ``init_seed``)."""


@contextlib.contextmanager
def seeded_init(seed: int | None) -> Iterator[None]:
    """Seed torch's CPU generator with ``seed`` for the block only (None: leave it alone).

    Layers initialised in the block are the same on every call, and the caller's random
    state is as before the block (`torch.random.fork_rng`).
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def untrained_notice(model: nn.Module) -> str | None:
    """One line naming the layers of ``model`` that keep their initialisation (None when every weight is loaded).

    Read off ``model.load_report`` (`create_model`): all layers for fresh towers, else its ``fresh`` tensors.
    """
    report = getattr(model, "load_report", None)
    if report is None:
        return None
    if report.source == FRESH:
        return "untrained model: every weight keeps its initialisation (seeded), no weights were loaded"
    layers = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in report.fresh))
    if not layers:
        return None
    return f"untrained layers (seeded initialisation, not learned): {', '.join(layers)}"

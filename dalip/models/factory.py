"""``create_model`` and ``get_tokenizer``: open_clip models with DALIP heads."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping

import torch

from dalip.models.checkpoint import LoadReport, head_keys, load_checkpoint
from dalip.models.configs import MODEL_CONFIGS, quiet_transformers
from dalip.models.dalip_model import DALIPModel
from dalip.registry import UnknownComponentError

__all__ = ["create_model", "get_tokenizer", "is_dalip_export", "list_models", "open_clip_model_config", "read_model_config"]


def list_models(pattern: str = "*") -> list[str]:
    """dalip's own configs followed by open_clip's architectures, filtered by a wildcard."""
    import fnmatch

    import open_clip

    names = MODEL_CONFIGS.list() + open_clip.list_models()
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def read_json(path: str | Path, what: str) -> Any:
    """The contents of a JSON file; a missing file or malformed JSON is an error naming ``what`` and the path."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON: {err}") from None


def read_model_config(path: str | Path) -> dict[str, Any]:
    """An open_clip model config from a JSON file (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    config = read_json(path, "model config file")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise ValueError(f"{path}: an open_clip model config needs {missing}")
    return config


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _build_open_clip(config: Mapping[str, Any]) -> torch.nn.Module:
    import open_clip

    config = dict(config)
    custom = config.pop("custom_text", False) or "hf_model_name" in config.get("text_cfg", {})
    return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**config)


def _schema(name: Any) -> str | None:
    """``"hf-hub"``, ``"local-dir"`` or None (open_clip's own parser)."""
    from open_clip.factory import parse_model_name

    return parse_model_name(name)[0] if isinstance(name, str) else None


def is_dalip_export(name: Any) -> bool:
    """True for ``"local-dir:DIR"`` where DIR holds a dalip export (``dalip_config.json``)."""
    return _schema(name) == "local-dir" and (Path(name[len("local-dir:"):]) / "dalip_config.json").is_file()


def open_clip_model_config(name: str, cache_dir: str | None = None, **open_clip_kwargs: Any) -> dict[str, Any]:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) of a model name.

    Read by open_clip's own readers: built-in configs, ``local-dir:`` folders, and
    ``open_clip_config.json`` of ``hf-hub:`` repos (the file open_clip fetches and caches
    when it builds the model). Keyword arguments that ``open_clip.create_model`` passes on
    to the model constructor override the config as they do there.

    Raises:
        ValueError: open_clip knows no such model.
    """
    import inspect

    import open_clip
    from open_clip.factory import _get_hf_config, parse_model_name

    schema, identifier = parse_model_name(name)
    if name in MODEL_CONFIGS:
        config = MODEL_CONFIGS.create(name).build(False)
    elif name.endswith(".json"):
        config = read_model_config(name)
    elif schema == "hf-hub":  # get_model_config has no cache_dir: read the same file open_clip reads
        found = _get_hf_config(identifier, cache_dir=cache_dir)
        config = found.get("model_cfg", found)
    else:
        config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"open_clip has no model config for {name!r}")
    own = set(inspect.signature(open_clip.create_model).parameters)
    config = {**config, **{k: v for k, v in open_clip_kwargs.items() if k not in own}}
    for key, (section, field) in {"force_image_size": ("vision_cfg", "image_size"),
                                  "force_context_length": ("text_cfg", "context_length")}.items():
        if open_clip_kwargs.get(key) is not None:
            config[section] = {**config[section], field: open_clip_kwargs[key]}
    return config


@contextlib.contextmanager
def _without_log(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with ``prefix`` during the block only (open_clip logs to root)."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def check_pretrained_tag(name: str, tag: str) -> None:
    """Raise a ValueError listing the valid tags unless open_clip knows ``tag`` for architecture ``name``."""
    import open_clip
    from open_clip.pretrained import is_pretrained_cfg

    if _schema(name) or name in MODEL_CONFIGS or name.endswith(".json"):
        raise ValueError(f"{name!r} takes no hub tag (pretrained={tag!r}): hub tags need an open_clip architecture name")
    if not is_pretrained_cfg(name, tag):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(
            f"unknown pretrained tag {tag!r} for {name!r} (nor a file). "
            f"Valid tags: {', '.join(tags) if tags else 'none (this architecture has no released weights)'}"
        )


def _set_preprocess(clip: torch.nn.Module, overrides: Mapping[str, Any]) -> None:
    """Give a dict-built model open_clip's full preprocess cfg (defaults, the tower's size, ``overrides``)."""
    import dataclasses

    import open_clip
    from open_clip.transform import PreprocessCfg

    cfg = {**dataclasses.asdict(PreprocessCfg()), "size": getattr(clip.visual, "image_size", 224), **overrides}
    open_clip.set_model_preprocess_cfg(clip, cfg)


def create_model(
    model_name_or_config: str | Mapping[str, Any],
    pretrained: str | Path | None = None,
    first_order: str | Mapping[str, str] = "tower",
    second_order: str | None | Mapping[str, str | None] = "mbdc",
    *,
    second_options: Mapping[str, Any] | None = None,
    alpha: float = 0.5,
    separate_second_scale: bool = False,
    alpha_learnable: bool = False,
    pretrained_towers: bool = True,
    pretrained_strict: bool = True,
    cache_dir: str | None = None,
    **open_clip_kwargs: Any,
) -> DALIPModel:
    """Any open_clip model with first- and second-order heads.

    The towers' weights come by every open_clip route, resolved by open_clip itself:

    - ``create_model("ViT-B-16", pretrained="laion2b_s34b_b88k")`` or ``pretrained="openai"``:
      a hub tag, downloaded and cached exactly as ``open_clip.create_model`` does;
    - ``create_model("hf-hub:org/repo")`` / ``create_model("local-dir:PATH")``: an open_clip
      hub-style model (``open_clip_config.json`` + weights);
    - ``pretrained="file.pt"`` / ``".safetensors"``: a local open_clip (or dalip) checkpoint;
    - ``create_model("local-dir:DIR")`` where DIR is a ``dalip export``: the whole DALIP
      model, heads included (the head arguments are then taken from the export).

    The new heads start fresh; ``model.load_report`` (a `LoadReport`) says where the
    weights came from and lists the fresh head tensors.

    Args:
        model_name_or_config: a dalip config (``"effl0-minilm"``), an open_clip
            architecture name (``"ViT-B-16"``), an ``hf-hub:`` / ``local-dir:`` name, an
            open_clip config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``) or JSON file.
        pretrained: a hub tag of the architecture (``open_clip.list_pretrained_tags_by_model``)
            or a local checkpoint file. Not allowed with ``hf-hub:`` / ``local-dir:`` names,
            which carry their own weights.
        first_order: ``"tower"`` (the tower's own output) or a pooler name, per tower if needed.
        second_order: a pooler name or None (plain CLIP), per tower if needed.
        second_options: pooler options, shared or per tower.
        alpha: first-order weight of the combined embedding.
        separate_second_scale: learn a second logit scale for the second-order pair.
        alpha_learnable: learn alpha (``sigmoid`` of a trained logit, initialised at ``alpha``).
        pretrained_towers: load the weights the model's source provides (the packages of
            dalip configs, the weights of ``hf-hub:`` / ``local-dir:`` names). False builds the
            architecture only, e.g. to load a checkpoint holding every weight.
        pretrained_strict: a ``pretrained`` file must fill every tower weight (`load_checkpoint`
            with ``strict=True``); False loads what matches and lists the rest in ``load_report``.
        cache_dir: open_clip's download cache (open_clip routes only).
        **open_clip_kwargs: passed to ``open_clip.create_model`` for named architectures,
            or added to the model config otherwise (e.g. ``init_logit_bias=-10`` for SigLIP).

    Returns:
        a `DALIPModel`.

    Raises:
        ValueError: unknown model name, or a tag unknown for the architecture (the
            message lists the valid tags).
        PretrainedMismatchError: a ``pretrained`` file that does not fit the towers
            (with ``pretrained_strict``).
    """
    import open_clip

    name = model_name_or_config
    if is_dalip_export(name):
        from dalip.models.export import load_export  # TEMP: cycle, removed by the dispatcher

        return load_export(name[len("local-dir:"):])
    if isinstance(name, (str, Path)) and str(name).endswith(".json"):
        name = read_model_config(name)
    is_file = pretrained is not None and (Path(pretrained).suffix in CHECKPOINT_SUFFIXES or Path(pretrained).is_file())
    source = f"file {pretrained}" if is_file else "fresh initialisation"
    if pretrained is not None and not is_file and (isinstance(name, Mapping) or name in MODEL_CONFIGS):
        raise ValueError(f"pretrained={str(pretrained)!r} is no checkpoint file; hub tags need an open_clip architecture name")
    if isinstance(name, Mapping):
        config = {**dict(name), **open_clip_kwargs}
        clip = _build_open_clip(config)
        _set_preprocess(clip, {})
    elif name in MODEL_CONFIGS:
        spec = MODEL_CONFIGS.create(name)
        config = {**spec.build(pretrained_towers), **open_clip_kwargs}
        with quiet_transformers():  # MiniLM's unused BERT pooler weights are expected
            clip = _build_open_clip(config)
        _set_preprocess(clip, spec.preprocess)
        if pretrained_towers:
            spec.load_towers(clip)
            source = f"packages of {name!r}" if not is_file else source
    elif _schema(name) or name in open_clip.list_models():
        if open_clip_kwargs.pop("pretrained", None):
            raise ValueError("pass pretrained weights as the 'pretrained' argument")
        tag = None
        if pretrained is not None and not is_file:
            if _schema(name):
                raise ValueError(f"{name!r} carries its own weights; pretrained={pretrained!r} is not used with it")
            check_pretrained_tag(name, str(pretrained))
            tag = str(pretrained)
        if not pretrained_towers:  # the architecture only: no checkpoint, no default tower weights
            open_clip_kwargs = {"load_weights": False, "pretrained_image": False, "pretrained_text": False,
                                **open_clip_kwargs}
        if cache_dir is not None:
            open_clip_kwargs["cache_dir"] = cache_dir
        with _without_log("No pretrained weights loaded") if not pretrained_towers else contextlib.nullcontext():
            clip = open_clip.create_model(name, pretrained=tag, **open_clip_kwargs)  # (weights follow: no warning)
        config = open_clip_model_config(name, **open_clip_kwargs)
        if tag is not None:
            source = f"open_clip.create_model({name!r}, pretrained={tag!r}): the hub weights, loaded strictly"
        elif _schema(name) and pretrained_towers:
            source = f"open_clip.create_model({name!r}): the weights of that {_schema(name)} source, loaded strictly"
    else:
        known = ", ".join(MODEL_CONFIGS.list()) + "; open_clip: " + ", ".join(open_clip.list_models()[:12]) + ", ..."
        raise UnknownComponentError(f"unknown model {name!r}. Known: {known} (see dalip.list_models())")
    model = DALIPModel(
        clip,
        embed_dim=int(config["embed_dim"]),
        first_order=first_order,
        second_order=second_order,
        second_options=second_options,
        alpha=alpha,
        separate_second_scale=separate_second_scale,
        alpha_learnable=alpha_learnable,
    )
    model.load_report = (load_checkpoint(model, pretrained, strict=pretrained_strict) if is_file
                         else LoadReport(source=source, fresh=head_keys(model)))
    return model


def get_tokenizer(model_name: str, cache_dir: str | None = None, **kwargs: Any) -> Any:
    """The tokenizer of any name `create_model` accepts (open_clip's own classes).

    dalip configs and JSON config files are read by dalip; a dalip export by its
    stored model name; everything else (architectures, ``hf-hub:``, ``local-dir:``) by
    ``open_clip.get_tokenizer``.
    """
    import open_clip

    if is_dalip_export(model_name):
        from dalip.models.export import export_tokenizer  # TEMP

        return export_tokenizer(model_name[len("local-dir:"):])
    if model_name in MODEL_CONFIGS:
        return MODEL_CONFIGS.create(model_name).tokenizer()
    if str(model_name).endswith(".json"):
        return tokenizer_from_config(read_model_config(model_name))
    return open_clip.get_tokenizer(model_name, cache_dir=cache_dir, **kwargs)


def tokenizer_from_config(config: Mapping[str, Any]) -> Any:
    """The tokenizer an open_clip model config names (``text_cfg.hf_tokenizer_name``, else CLIP's BPE)."""
    import open_clip

    text = config["text_cfg"]
    if "hf_tokenizer_name" in text:
        return open_clip.tokenizer.HFTokenizer(text["hf_tokenizer_name"], context_length=text.get("context_length", 77))
    return open_clip.tokenizer.SimpleTokenizer(context_length=text.get("context_length", 77))

"""``create_model`` and ``get_tokenizer``: open_clip models with DALIP heads.

The towers' weights come by every open_clip route, resolved by open_clip itself
(one function per source in `dalip.models.sources`):

- ``create_model("ViT-B-16", pretrained="laion2b_s34b_b88k")`` or ``pretrained="openai"``:
  a hub tag, downloaded and cached exactly as ``open_clip.create_model`` does;
- ``create_model("hf-hub:org/repo")`` / ``create_model("local-dir:PATH")``: an open_clip
  hub-style model (``open_clip_config.json`` + weights);
- ``create_model("effl0-minilm")``: a dalip config, its towers from the packages that ship them;
- ``create_model({...})`` / ``create_model("config.json")``: an open_clip config, freshly initialised;
- ``pretrained="file.pt"`` / ``".safetensors"``: a local open_clip (or dalip) checkpoint;
- ``create_model("local-dir:DIR")`` where DIR is a ``dalip export``: the whole DALIP
  model, heads included (the head arguments are then taken from the export).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dalip.models.dalip_model import DALIPModel
from dalip.models.export_loading import export_tokenizer, load_export
from dalip.models.head_spec import HeadSpec
from dalip.models.hub import hub_errors
from dalip.models.names import (  # re-exported: their import path before dalip.models.names
    CHECKPOINT_SUFFIXES,
    check_pretrained_tag,
    check_pretrained_value,
    export_folder,
    is_checkpoint_file,
    is_dalip_export,
    list_models,
    open_clip_model_config,
    read_json,
    read_model_config,
)
from dalip.models.sources import INIT_SEED, add_heads, apply_checkpoint, build_towers, seeded_init
from dalip.models.tokenizers import tokenizer_for_name, tokenizer_from_config

__all__ = [
    "CHECKPOINT_SUFFIXES", "check_pretrained_tag", "create_model", "get_tokenizer", "is_dalip_export", "list_models",
    "open_clip_model_config", "read_json", "read_model_config", "tokenizer_from_config",
]


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
    init_seed: int | None = INIT_SEED,
    **open_clip_kwargs: Any,
) -> DALIPModel:
    """Any open_clip model with first- and second-order heads (the weight routes: see the module docs).

    The heads (``first_order``, ``second_order``, ``second_options``, ``alpha``,
    ``separate_second_scale``, ``alpha_learnable``) are `DALIPModel`'s, checked by `HeadSpec`;
    they start fresh. ``model.load_report`` (a `LoadReport`) says where the weights came
    from and lists the fresh head tensors.

    Args:
        model_name_or_config: a dalip config (``"effl0-minilm"``), an open_clip architecture
            (``"ViT-B-16"``), an ``hf-hub:`` / ``local-dir:`` name, an open_clip config dict or JSON file.
        pretrained: a hub tag of the architecture or a local checkpoint file (not with
            ``hf-hub:`` / ``local-dir:`` names, which carry their own weights).
        pretrained_towers: load the weights the model's source provides; False builds the
            architecture only, e.g. to load a checkpoint holding every weight.
        pretrained_strict: a ``pretrained`` file must fill every tower weight; False loads
            what matches and lists the rest in ``load_report``.
        cache_dir: open_clip's download cache (open_clip routes only).
        init_seed: the seed of every layer built untrained (fresh heads, the projection on a
            pretrained trunk, fresh towers), so that the same call gives the same model; the
            caller's random state is left as it was. None draws them from torch's global generator.
        **open_clip_kwargs: passed to ``open_clip.create_model`` for named architectures,
            or added to the model config otherwise (e.g. ``init_logit_bias=-10`` for SigLIP).

    Raises:
        ValueError: unknown model name, or a tag unknown for the architecture (listing the valid tags).
        PretrainedMismatchError: a ``pretrained`` file that does not fit the towers (with ``pretrained_strict``).
        HubUnavailableError: hub weights or configs not in the cache, and no network or hub access.
    """
    if is_dalip_export(model_name_or_config):
        return load_export(export_folder(model_name_or_config))
    heads = HeadSpec(first_order, second_order, second_options or {}, alpha, separate_second_scale, alpha_learnable)
    heads.check()  # before any tower is built or downloaded
    check_pretrained_value(pretrained)
    checkpoint = pretrained if is_checkpoint_file(pretrained) else None
    hub_tag = str(pretrained) if pretrained is not None and checkpoint is None else None
    with seeded_init(init_seed):
        towers = build_towers(model_name_or_config, hub_tag, pretrained_towers=pretrained_towers, cache_dir=cache_dir,
                              open_clip_kwargs=open_clip_kwargs)
        model = add_heads(towers, heads)
    model.load_report = apply_checkpoint(model, checkpoint, strict=pretrained_strict, towers=towers)
    return model


def get_tokenizer(model_name: str, cache_dir: str | None = None, **kwargs: Any) -> Any:
    """The tokenizer of any name `create_model` accepts (open_clip's own classes).

    dalip configs and JSON config files are read by dalip; a dalip export by its
    stored model name; everything else (architectures, ``hf-hub:``, ``local-dir:``) by
    ``open_clip.get_tokenizer``.
    """
    if is_dalip_export(model_name):
        return export_tokenizer(export_folder(model_name))
    with hub_errors(f"the tokenizer of {model_name}"):
        return tokenizer_for_name(model_name, cache_dir=cache_dir, **kwargs)

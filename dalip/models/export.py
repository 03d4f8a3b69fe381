"""Exporting a DALIP model as an open_clip hub-style folder plus the whole DALIP model.

A folder written by `export_model` holds

- ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``) and
  ``open_clip_model.safetensors``: the towers and their first-order projections (the
  ``clip.`` part of the state dict). ``open_clip.create_model_and_transforms("local-dir:DIR")``
  or ``"hf-hub:ORG/REPO"`` after an upload loads them; its ``encode_image`` / ``encode_text``
  are dalip's first-order embeddings. HF tokenizers are saved beside them.
- ``dalip_config.json`` (the run's ``model`` section, the open_clip model and preprocess
  configs) and ``dalip_model.safetensors`` (every weight, heads included):
  ``dalip.create_model("local-dir:DIR")`` loads the whole DALIP model.
- ``text_tower/config.json`` and the tokenizer's files (a Hugging Face text tower): the
  folder is self-contained, nothing is fetched from the hub to rebuild it.

A first-order *pooler* head (``first_order="mean"``, ...) is not part of open_clip's
model: its first-order embedding cannot be carried by the open_clip files, so such a
model is exported with ``open_clip_files=False`` (DALIP files only).

``open_clip_config.json`` names a Hugging Face text tower as it was built (dalip's own
``effl0-minilm`` by its hub id, ``sentence-transformers/all-MiniLM-L6-v2``): open_clip reads
``hf_model_name`` as a hub id or a path against the *working directory*, never the export
folder, so no name written there resolves offline after the folder moves. ``hf-hub:`` loading
after `push_export` and ``local-dir:`` loading online use the hub id; offline, plain open_clip
takes the folder's copy when given ``text_cfg={**text_cfg, "hf_model_name": "DIR/text_tower",
"hf_model_pretrained": False}`` (``text_cfg`` as stored; `dalip.models.export_loading.local_model_config`
writes it), and ``dalip.create_model("local-dir:DIR")`` always reads it. The tokenizer needs
nothing: open_clip reads a ``local-dir:`` tokenizer from the folder itself.

A folder that is not empty is refused unless ``overwrite``, which deletes the files of a
previous export there (those its ``dalip_config.json`` lists) and nothing else; every file is
written atomically, with the usual permissions (``0o666`` less the umask).

This module writes and uploads exports; `dalip.models.export_loading` loads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dalip.errors import RunFolderError
from dalip.io import atomic_write, atomic_write_text, folder_entries, preview
from dalip.models.configs import portable_model_config
from dalip.models.dalip_model import DALIPModel
from dalip.models.export_loading import (
    EXPORT_FILES_KEY,
    TEXT_TOWER,
    export_files,
    export_tokenizer,
    load_export,
    read_export,
)
from dalip.models.head_spec import HEAD_FIELDS
from dalip.models.names import (
    DALIP_CONFIG,
    DALIP_WEIGHTS,
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHTS,
    open_clip_model_config,
)

# load_export and export_tokenizer live in dalip.models.export_loading; imported here as before
__all__ = [
    "DALIP_CONFIG", "DALIP_WEIGHTS", "OPEN_CLIP_CONFIG", "OPEN_CLIP_WEIGHTS", "export_files", "export_model",
    "export_tokenizer", "load_export", "push_export",
]

EXPORT_FORMAT = "dalip-export/1"
"""The ``format`` of ``dalip_config.json``."""


def _save_tensors(state: Mapping[str, Any], path: Path) -> str:
    """Write tensors to a ``.safetensors`` file (detached, on the CPU, contiguous); returns its name.

    Through `atomic_write` (safetensors' own ``save_file`` leaves a mode-600 file).
    """
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in state.items()})
    atomic_write(path, lambda f: f.write(data))
    return path.name


def _jsonable(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(value, default=list))


def _check_open_clip_files_possible(model: DALIPModel) -> None:
    """Raise a ValueError when a first-order embedding is a pooler head, which open_clip's files cannot carry."""
    poolers = {t: f for t, f in model.first_order.items() if f not in ("tower", None)}
    if poolers:
        raise ValueError(
            f"first_order={poolers} is a dalip pooler head, which open_clip's model does not have: the open_clip "
            "files could not reproduce the first-order embedding. Export the DALIP files only (open_clip_files=False, "
            "`dalip export --dalip-only`)"
        )


def _claim_export_folder(output: Path, overwrite: bool) -> None:
    """Refuse a file or a non-empty folder; with ``overwrite``, delete a previous export's files (only those)."""
    if output.exists() and not output.is_dir():
        raise RunFolderError(f"export output {output} is a file, not a folder")
    found = folder_entries(output)
    if found and not overwrite:
        raise RunFolderError(
            f"export output {output} is not empty ({preview(found)}); "
            "pass --overwrite (overwrite=True) to replace a previous export there (only its files are deleted), "
            "or choose another --output"
        )
    for path in export_files(output) if found else []:
        path.unlink()
    if (output / TEXT_TOWER).is_dir() and not any((output / TEXT_TOWER).iterdir()):
        (output / TEXT_TOWER).rmdir()


def _write_open_clip_files(output: Path, configs: dict[str, Any], state: Mapping[str, Any]) -> list[str]:
    """``open_clip_config.json`` (``configs``: ``model_cfg``, ``preprocess_cfg``) and the towers' weights
    (the ``clip.`` part of ``state``); returns the names written."""
    atomic_write_text(output / OPEN_CLIP_CONFIG, json.dumps(configs, indent=2))
    clip = {k[len("clip."):]: v for k, v in state.items() if k.startswith("clip.")}
    return [OPEN_CLIP_CONFIG, _save_tensors(clip, output / OPEN_CLIP_WEIGHTS)]


def _write_text_files(output: Path, model: DALIPModel, tokenizer: Any) -> list[str]:
    """A Hugging Face text tower's ``text_tower/config.json`` and a Hugging Face ``tokenizer``'s files
    (open_clip's ``local-dir:`` tokenizers read the folder); returns the names written."""
    import open_clip
    from open_clip.hf_model import HFTextEncoder

    written = []
    text = getattr(model.clip, "text", None)
    if isinstance(text, HFTextEncoder):
        atomic_write_text(output / TEXT_TOWER / "config.json", text.config.to_json_string())
        written.append(f"{TEXT_TOWER}/config.json")
    if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
        saved = tokenizer.tokenizer.save_pretrained(str(output))  # transformers returns the paths it wrote
        written += [Path(p).relative_to(output).as_posix() for p in saved if Path(p).is_file()]
    return written


def _dalip_config(model: DALIPModel, model_section: Mapping[str, Any], configs: dict[str, Any], source: str) -> dict[str, Any]:
    """The contents of ``dalip_config.json`` but its file list: the ``model`` section's name, heads and open_clip
    options, the open_clip ``configs`` (``model_cfg``, ``preprocess_cfg``) and the ``source`` note."""
    heads = {k: model_section.get(k) for k in HEAD_FIELDS if k in model_section}
    section = {"name": str(model_section["name"]), **heads, "open_clip": dict(model_section.get("open_clip") or {})}
    if model.alpha_logit is None:  # the model's own weight (it may have been set after training); a learned one is in the state
        section["alpha"] = model.alpha
    return {"format": EXPORT_FORMAT, "model": _jsonable(section), **configs, "source": source}


def export_model(
    model: DALIPModel,
    model_section: Mapping[str, Any],
    output: str | Path,
    *,
    tokenizer: Any = None,
    open_clip_files: bool = True,
    source: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``model`` to the folder ``output`` (see the module docs for the files).

    Args:
        model: the DALIP model.
        model_section: how it was built: ``name`` (as `create_model` takes it), ``first_order``,
            ``second_order``, ``second_options``, ``alpha``, ``separate_second_scale``, ``open_clip``
            (the ``model`` section of a run config).
        output: the folder (created).
        tokenizer: its files are saved in the folder when it is a Hugging Face tokenizer.
        open_clip_files: also write the open_clip files (needs ``first_order="tower"``).
        source: a note on the origin, stored in ``dalip_config.json``.
        overwrite: write into a non-empty folder, deleting a previous export's files first.

    Returns:
        the folder; `export_files` lists what was written.

    Raises:
        ValueError: ``open_clip_files`` for a model whose first-order embedding is a pooler head.
        RunFolderError: ``output`` is a file, or a non-empty folder without ``overwrite``.
    """
    import open_clip

    if open_clip_files:
        _check_open_clip_files_possible(model)
    open_clip_kwargs = dict(model_section.get("open_clip") or {})
    model_cfg = portable_model_config(open_clip_model_config(str(model_section["name"]), **open_clip_kwargs))
    configs = _jsonable({"model_cfg": model_cfg, "preprocess_cfg": open_clip.get_model_preprocess_cfg(model.clip)})
    output = Path(output)
    _claim_export_folder(output, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    written = _write_open_clip_files(output, configs, state) if open_clip_files else []
    written += [*_write_text_files(output, model, tokenizer), _save_tensors(state, output / DALIP_WEIGHTS)]
    config = {**_dalip_config(model, model_section, configs, source), EXPORT_FILES_KEY: sorted([*written, DALIP_CONFIG])}
    atomic_write_text(output / DALIP_CONFIG, json.dumps(config, indent=2))  # last: it marks a finished export
    return output


def push_export(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
                commit_message: str = "Add DALIP model") -> Any:
    """Upload an export folder to the Hugging Face Hub (``HfApi.create_repo`` + ``upload_folder``).

    Afterwards ``open_clip.create_model_and_transforms("hf-hub:REPO")`` loads the towers
    and ``dalip`` users can download the folder (``huggingface_hub.snapshot_download``) and
    load it with ``dalip.create_model("local-dir:FOLDER")``.
    """
    import huggingface_hub

    folder, _ = read_export(folder)
    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)

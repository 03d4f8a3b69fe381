"""A frozen-tower feature cache: ``model.cache_frozen: true``.

When both towers are fully locked and the training images are not augmented, a
tower's output for a training sample is the same at every step, so it is
computed once (`FrozenTowerCache.build`) and looked up every epoch:

- images by their **dataset index** (the loader then yields ``(index, caption)``
  keys, `KeyedSamples` / `KeyedBatch`, so shuffling, epochs and resuming work
  unchanged: the run order is the same, only the tower pass is skipped);
- captions by their **text**, so a caption drawn at random per access (the
  Twemoji templates, a labelled folder's prompts) is covered: every variant a
  known dataset can draw is encoded up front (`caption_variants`), and a caption
  never seen before is encoded (frozen, exactly as training would) on first use.

What is cached is exactly what the frozen part of a tower computes, in the modes
and precision of training (`set_train_mode`: locked towers in eval mode, and the
run's autocast): ``tokens (N, C)``, ``mask (N,)``, ``guide (C,)`` and the pooled
output *before* a trainable projection. The projection that follows a frozen
trunk (a timm tower's ``visual.head``, a Hugging Face tower's ``text.proj``) is
trained (e.g. ``optim.head_patterns: ["clip.visual.head.*"]``) and runs every
step on the cached input (`CachedTowersForward`), as do the DALIP heads. Other
towers' own outputs end in their frozen projection and are cached whole. The
cache lives in memory on the training device (each process builds its own); it
is rebuilt when a run resumes (one frozen pass over the images and the distinct
captions), so no run folder holds a stale copy.

Runs of one process can share a cache (`FrozenCachePool`; ``dalip sweep`` does for
its in-process runs): a run whose frozen towers, training data, precision and device
match an earlier one's, by `frozen_fingerprint`, reuses that run's cache instead of
building it again, e.g. the seeds and head variants of an ablation on pretrained towers.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import json
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from dalip.data.batch import CaptionVariants
from dalip.errors import ConfigError
from dalip.models import DALIPModel
from dalip.models.head_spec import TOWERS
from dalip.models.tokens import TowerOutput
from dalip.runs.config import TrainConfig, config_to_dict
from dalip.train.builders import set_train_mode
from dalip.train.precision import autocast

__all__ = [
    "CachedTowersForward", "FrozenCachePool", "FrozenTowerCache", "KeyedBatch", "KeyedSamples", "TowerStore",
    "apply_tail", "caption_variants", "check_cacheable_dataset", "collate_keyed", "frozen_fingerprint",
    "frozen_parameters_problem", "tower_tail",
]

FIELDS = tuple(f.name for f in fields(TowerOutput))  # tokens, mask, guide, pooled


# ------------------------------------------------------------------- checks
def check_cacheable_dataset(dataset: Dataset) -> None:
    """Refuse a training set whose sample behind an index is not the same image every epoch.

    Raises:
        ConfigError: an iterable dataset (shards, mixes with shards: no indices) or one with
            ``set_epoch`` (its samples are redrawn per epoch, e.g. a mix of two sources).
    """
    if isinstance(dataset, IterableDataset):
        raise ConfigError(f"model.cache_frozen: the training set ({type(dataset).__name__}) is a stream without "
                          "sample indices to cache by; use a map-style dataset (twemoji, csv, folder)")
    if hasattr(dataset, "set_epoch"):
        raise ConfigError(f"model.cache_frozen: the training set ({type(dataset).__name__}) redraws its samples "
                          "every epoch (set_epoch), so an index is not the same image twice")


# -------------------------------------------------------------------- towers
def tower_tail(model: DALIPModel, tower: str) -> nn.Module | None:
    """The projection applied after a tower's frozen part, run every step on the cached input (or None).

    A timm image tower's pooled output is ``visual.head(trunk.forward_head(features))``
    and a Hugging Face text tower's is ``text.proj(pooler(hidden states))``: the head /
    proj is not part of open_clip's tower locking (it is often trained, see
    ``optim.head_patterns``). Other towers (open_clip ViTs and text transformers) end in a
    projection that their lock freezes with the rest.
    """
    if tower == "image" and model.image_kind == "timm":
        return model.clip.visual.head
    if tower == "text" and model.text_kind == "hf":
        return model.clip.text.proj
    return None


def _tower_modules(model: DALIPModel, tower: str) -> list[nn.Module]:
    """The modules whose train/eval mode `set_train_mode` sets for a locked tower."""
    clip = model.clip
    if tower == "image":
        return [clip.visual]
    return [getattr(clip, "text", getattr(clip, "transformer", None))]


def frozen_parameters_problem(model: DALIPModel, tower: str) -> str | None:
    """Trainable parameters in a tower's cached (frozen) part, named; None when it is frozen."""
    clip, tail = model.clip, tower_tail(model, tower)
    skip = {id(p) for p in tail.parameters()} if tail is not None else set()
    if tower == "image":
        named = list(clip.visual.named_parameters(prefix="clip.visual"))
    else:  # everything of the open_clip model but the image tower and the temperature / bias
        named = [(n, p) for n, p in clip.named_parameters(prefix="clip")
                 if not n.startswith("clip.visual.") and n not in ("clip.logit_scale", "clip.logit_bias")]
    trainable = [n for n, p in named if p.requires_grad and id(p) not in skip]
    if not trainable:
        return None
    more = f" and {len(trainable) - 3} more" if len(trainable) > 3 else ""
    return f"the {tower} tower has trainable parameters ({', '.join(trainable[:3])}{more})"


def _tail_slot(tower: str) -> tuple[str, str]:
    """Where a tower's tail sits in the open_clip model: (owner attribute, tail attribute)."""
    return ("visual", "head") if tower == "image" else ("text", "proj")


@contextlib.contextmanager
def _without_tail(model: DALIPModel, tower: str) -> Iterator[None]:
    """Run ``model.tower`` with the tower's tail replaced by the identity (its pooled output = the tail's input)."""
    tail = tower_tail(model, tower)
    if tail is None:
        yield
        return
    owner_name, name = _tail_slot(tower)
    owner = getattr(model.clip, owner_name)
    setattr(owner, name, nn.Identity())
    try:
        yield
    finally:
        setattr(owner, name, tail)


def apply_tail(model: DALIPModel, tower: str, core: TowerOutput) -> TowerOutput:
    """A cached tower output with the tower's (trainable) tail applied to ``pooled``: the tower's full output."""
    tail = tower_tail(model, tower)
    return core if tail is None else replace(core, pooled=tail(core.pooled))


class CachedTowersForward(nn.Module):
    """``model(images, texts)`` from cached frozen tower outputs: the tails, then `DALIPModel.forward_towers`.

    The module the trainer wraps (DistributedDataParallel, ``torch.compile``) instead of
    the model when the cache is on; it holds no state of its own.
    """

    def __init__(self, model: DALIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_core: TowerOutput, text_core: TowerOutput) -> dict[str, Tensor | None]:
        return self.model.forward_towers(apply_tail(self.model, "image", image_core),
                                         apply_tail(self.model, "text", text_core))


def frozen_fingerprint(model: DALIPModel, dataset: Dataset, config: TrainConfig, device: torch.device) -> str:
    """A digest of everything a run's cached tower outputs depend on (two runs with equal digests share a cache).

    The frozen towers' weights and buffers (every tensor of the open_clip model but the
    trainable tails and the temperature / bias), which outputs are kept (tokens only when
    a head reads them), the ``data`` section (data set, split, image size, captions), the
    training-set size, the precision, ``model.channels_last``, the model name (its
    tokenizer), the device type and the torch version.
    """
    digest = hashlib.sha256()
    skip = tuple(".".join(_tail_slot(t)) + "." for t in TOWERS if tower_tail(model, t) is not None)
    for key, value in sorted(model.clip.state_dict().items()):
        if key.startswith(skip) or key in ("logit_scale", "logit_bias"):
            continue
        digest.update(f"{key} {value.dtype} {tuple(value.shape)}".encode())
        digest.update(value.detach().reshape(-1).cpu().view(torch.uint8).numpy().tobytes())
    setting = {
        "tokens": [model.reads_tokens(t) for t in TOWERS],
        "data": config_to_dict(config)["data"],
        "size": len(dataset),  # type: ignore[arg-type]
        "precision": config.run.precision,
        "channels_last": config.model.channels_last,
        "name": config.model.name,
        "device": device.type,
        "torch": torch.__version__,
    }
    digest.update(json.dumps(setting, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class FrozenCachePool:
    """Frozen-tower caches kept between the runs of one process, by `frozen_fingerprint`.

    ``pool.cache_for(model, dataset, tokenizer, config, device)`` returns the cache of an
    earlier run with the same fingerprint (bound to the new model: its tails and heads,
    captions first seen later are added for every run) or builds one. At most ``size``
    caches are held, the most recently used.
    """

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self.builds = self.reuses = 0
        self._caches: OrderedDict[str, FrozenTowerCache] = OrderedDict()

    def cache_for(self, model: DALIPModel, dataset: Dataset, tokenizer: Any, config: TrainConfig,
                  device: torch.device, progress: bool = True) -> FrozenTowerCache:
        """The cache for this run: an equal-fingerprint one rebound to ``model``, or a new build."""
        _check_cacheable(model, dataset)
        key = frozen_fingerprint(model, dataset, config, device)
        if key in self._caches:
            self._caches.move_to_end(key)
            self.reuses += 1
            return self._caches[key].bound_to(model, tokenizer, config)
        cache = FrozenTowerCache.build(model, dataset, tokenizer, config, device, progress)
        self.builds += 1
        self._caches[key] = cache
        while len(self._caches) > self.size:
            self._caches.popitem(last=False)
        return cache


def _check_cacheable(model: DALIPModel, dataset: Dataset) -> None:
    """Fully locked towers and a dataset whose index is the same image every epoch, or a `ConfigError`."""
    problems = [p for t in TOWERS if (p := frozen_parameters_problem(model, t)) is not None]
    if problems:
        raise ConfigError("model.cache_frozen: " + "; ".join(problems) + " (the cache needs fully locked towers)")
    check_cacheable_dataset(dataset)


# ---------------------------------------------------------------------- data
class KeyedSamples(Dataset):
    """``(index, caption)`` instead of ``(image, caption)``: what a cached run needs of a sample.

    The wrapped dataset's ``__getitem__`` still runs (under the trainer's per-sample
    RNG), so the caption drawn for a sample is exactly that of an uncached run; an
    unreadable sample stays None.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, str] | None:
        sample = self.dataset[index]
        return None if sample is None else (index, sample[1])


@dataclass
class KeyedBatch:
    """A collated batch of `KeyedSamples`.

    Attributes:
        indices: ``(B,)`` int64 dataset indices (the image keys).
        texts: ``B`` captions (the text keys).
        skipped: samples of this batch dropped as unreadable.
    """

    indices: Tensor
    texts: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    def pin_memory(self) -> KeyedBatch:
        return self


def collate_keyed(samples: Sequence[tuple[int, str] | None]) -> KeyedBatch:
    """Stack the keys of the good samples, count the ``None`` ones."""
    good = [s for s in samples if s is not None]
    indices = torch.tensor([s[0] for s in good], dtype=torch.long)
    return KeyedBatch(indices, [s[1] for s in good], len(samples) - len(good))


def caption_variants(dataset: Dataset, index: int) -> list[str] | None:
    """Every caption ``dataset[index]`` can draw, or None when the dataset does not say.

    Known for a dataset with `dalip.data.batch.CaptionVariants` (captions from templates:
    the embedded data's caption templates, a labelled folder's prompts), also inside a
    ``ConcatDataset``. Otherwise (a CSV's fixed caption, an unknown dataset) the build
    pass's caption is cached and any other one is encoded on first use.
    """
    if isinstance(dataset, ConcatDataset):
        part = bisect.bisect_right(dataset.cumulative_sizes, index)
        start = dataset.cumulative_sizes[part - 1] if part else 0
        return caption_variants(dataset.datasets[part], index - start)
    if isinstance(dataset, CaptionVariants):
        return list(dataset.caption_variants(index))
    return None


class _BuildSamples(Dataset):
    """``(index, image (3, S, S), captions)`` for the build pass: the sample's image and every caption it can have."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Tensor, list[str]] | None:
        sample = self.dataset[index]
        if sample is None:
            return None
        variants = caption_variants(self.dataset, index) or []
        return index, sample[0], list(dict.fromkeys([sample[1], *variants]))


def _collate_build(samples: Sequence[Any]) -> tuple[list[int], Tensor | None, list[str]]:
    good = [s for s in samples if s is not None]
    images = torch.stack([s[1] for s in good]) if good else None
    return [s[0] for s in good], images, [c for s in good for c in s[2]]


# --------------------------------------------------------------------- store
class TowerStore:
    """One tower's cached outputs, one row per key (a dataset index or a caption).

    Fields (each row-indexed, on the training device, in the dtype the tower computed):
    ``tokens (R, N, C)``, ``mask (R, N)`` bool, ``guide (R, C)`` and ``pooled (R, P)``
    (the tail's input); a field the tower does not produce (no head reads its tokens,
    no padding mask) is not stored.
    """

    def __init__(self) -> None:
        self.rows: dict[Hashable, int] = {}
        self.data: dict[str, Tensor] = {}
        self.present: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.rows

    def add(self, keys: Sequence[Hashable], out: TowerOutput, reserve: int = 0) -> None:
        """Store row ``i`` of every field of ``out`` under ``keys[i]`` (keys already stored are left).

        ``reserve``: rows to allocate at the first call (more rows grow the store by half).
        """
        present = tuple(f for f in FIELDS if getattr(out, f) is not None)
        if self.present is None:
            self.present = present
        elif present != self.present:
            raise RuntimeError(f"tower output fields changed: {present} after {self.present}")
        pick, fresh = [], {}
        for i, key in enumerate(keys):
            if key not in self.rows and key not in fresh:
                pick.append(i)
                fresh[key] = None
        if not pick:
            return
        start, end = len(self.rows), len(self.rows) + len(pick)
        index = torch.tensor(pick, dtype=torch.long, device=getattr(out, present[0]).device)
        for name in present:
            value = getattr(out, name).detach().index_select(0, index)
            stored = self.data.get(name)
            if stored is None or stored.shape[0] < end:
                capacity = max(end, reserve, 0 if stored is None else stored.shape[0] * 3 // 2)
                grown = value.new_empty((capacity, *value.shape[1:]))
                if stored is not None:
                    grown[:start] = stored[:start]
                self.data[name] = stored = grown
            stored[start:end] = value
        self.rows.update((key, row) for row, key in enumerate(fresh, start))

    def get(self, keys: Sequence[Hashable]) -> TowerOutput:
        """The stored rows of ``keys`` as one `TowerOutput` (fields ``(B, ...)``; absent ones None)."""
        if self.present is None:
            raise KeyError("the cache is empty")
        rows = torch.tensor([self.rows[k] for k in keys], dtype=torch.long)
        values = {f: None for f in FIELDS}
        for name in self.present:
            stored = self.data[name]
            values[name] = stored.index_select(0, rows.to(stored.device))
        return TowerOutput(**values)

    def nbytes(self) -> int:
        """Bytes of the stored rows (allocated capacity beyond them not counted)."""
        n = len(self.rows)
        return sum(t[:n].numel() * t.element_size() for t in self.data.values())

    def row_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-row shape of each stored field, e.g. ``{"tokens": (16, 1280), ...}``."""
        return {name: tuple(t.shape[1:]) for name, t in self.data.items()}


# --------------------------------------------------------------------- cache
def _batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FrozenTowerCache:
    """Both towers' frozen outputs for every training sample: images by dataset index, captions by text.

    Build it with `build`; `lookup` gives a batch's tower outputs for `CachedTowersForward`.

    Args:
        model: the DALIP model (both towers fully locked).
        tokenizer: the model's tokenizer (for captions seen first during training).
        config: the run's config (precision, batch size).
        device: where the cache lives and the towers run.
    """

    def __init__(self, model: DALIPModel, tokenizer: Any, config: TrainConfig, device: torch.device) -> None:
        self.model, self.tokenizer, self.config, self.device = model, tokenizer, config, device
        self.images, self.texts = TowerStore(), TowerStore()
        self.build_seconds = 0.0
        self.encoded_later = 0  # captions first seen during training (not enumerable up front)
        self.reused = False  # taken over from an earlier run of the process (`FrozenCachePool`)

    # ------------------------------------------------------------ computing
    @contextlib.contextmanager
    def _frozen_pass(self) -> Iterator[None]:
        """The towers as training runs them (`set_train_mode`, the run's autocast), without grad or RNG use."""
        modes = {m: m.training for m in self.model.modules()}
        set_train_mode(self.model, self.config)
        try:
            for tower in TOWERS:
                if any(m.training for top in _tower_modules(self.model, tower) for m in top.modules()):
                    raise RuntimeError(f"the {tower} tower is in train mode; cached outputs would not be what "
                                       "training computes")
            # the towers draw no random numbers in eval mode; the build's DataLoader would (its base seed)
            with torch.random.fork_rng(devices=[]), torch.no_grad(), autocast(self.config, self.device):
                yield
        finally:
            for module, training in modes.items():
                module.training = training

    def _core(self, tower: str, x: Tensor) -> TowerOutput:
        """The frozen part of a tower's output for ``x``: `DALIPModel.tower` with the tail left out."""
        with _without_tail(self.model, tower):
            return self.model.tower(tower, x)

    def _encode_texts(self, captions: Sequence[str], progress: bool = False) -> None:
        """Encode captions in batches of exactly ``data.batch_size`` (a short one is filled up with cached ones)."""
        size = self.config.data.batch_size
        bar = tqdm(total=len(captions), desc="frozen cache: captions", unit="caption", disable=not progress)
        for chunk in _batched(list(captions), size):
            filler = [*itertools.islice(self.texts.rows, size - len(chunk)), *captions]
            padded = [*chunk, *filler[: size - len(chunk)]]  # keys already stored are not stored again
            ids = self.tokenizer(padded).to(self.device)
            self.texts.add(padded, self._core("text", ids), reserve=len(captions))
            bar.update(len(chunk))
        bar.close()

    @classmethod
    def build(cls, model: DALIPModel, dataset: Dataset, tokenizer: Any, config: TrainConfig,
              device: torch.device, progress: bool = True) -> FrozenTowerCache:
        """Run both frozen towers once over every sample of ``dataset`` (and every caption it can draw).

        Raises:
            ConfigError: a tower's cached part has trainable parameters, or the dataset's
                samples change between epochs (see `check_cacheable_dataset`).
        """
        _check_cacheable(model, dataset)
        cache, start = cls(model, tokenizer, config, device), time.perf_counter()
        size = config.data.batch_size
        loader = DataLoader(_BuildSamples(dataset), batch_size=size, num_workers=config.data.workers,
                            collate_fn=_collate_build)
        first: tuple[list[int], Tensor] | None = None
        captions: dict[str, None] = {}
        with cache._frozen_pass():
            bar = tqdm(total=len(dataset), desc="frozen cache: images", unit="image", disable=not progress)
            for indices, images, texts in loader:
                bar.update(len(indices))
                if images is not None and first is not None and len(indices) < size:  # fill up a short batch
                    fill = size - len(indices)
                    indices, images = [*indices, *first[0][:fill]], torch.cat([images, first[1][:fill]])
                if images is not None:
                    first = first or (indices, images)
                    cache.images.add(indices, cache._core("image", images.to(device)), reserve=len(dataset))
                captions.update(dict.fromkeys(texts))
            bar.close()
            cache._encode_texts(list(captions), progress)
        cache.build_seconds = time.perf_counter() - start
        return cache

    def bound_to(self, model: DALIPModel, tokenizer: Any, config: TrainConfig) -> FrozenTowerCache:
        """This cache's stored outputs for another run's model (same frozen towers: see `FrozenCachePool`)."""
        other = type(self)(model, tokenizer, config, self.device)
        other.images, other.texts = self.images, self.texts
        other.reused = True
        return other

    # --------------------------------------------------------------- lookup
    def lookup(self, batch: KeyedBatch) -> tuple[TowerOutput, TowerOutput]:
        """The cached image and text outputs of a batch (fields ``(B, ...)`` on the device).

        A caption not cached yet is encoded now by the frozen text tower (and kept).

        Raises:
            KeyError: an image that was unreadable when the cache was built.
        """
        missing = [t for t in dict.fromkeys(batch.texts) if t not in self.texts]
        if missing:
            with self._frozen_pass():
                self._encode_texts(missing)
            self.encoded_later += len(missing)
        absent = [i for i in batch.indices.tolist() if i not in self.images]
        if absent:
            raise KeyError(f"model.cache_frozen: training samples {absent[:5]} were unreadable when the cache was "
                           "built; restart the run to rebuild it")
        return self.images.get(batch.indices.tolist()), self.texts.get(batch.texts)

    # -------------------------------------------------------------- report
    def nbytes(self) -> int:
        """Bytes held by the cached outputs (images and captions)."""
        return self.images.nbytes() + self.texts.nbytes()

    def summary(self) -> str:
        """One line: samples, captions, footprint, build time."""
        n, m = len(self.images), len(self.texts)
        per_image = self.images.nbytes() / max(n, 1)
        per_text = self.texts.nbytes() / max(m, 1)
        return (f"frozen cache: {n} images ({per_image / 1024:.1f} KiB each), {m} captions "
                f"({per_text / 1024:.1f} KiB each), {self.nbytes() / 2**20:.1f} MiB on {self.device.type}, "
                + ("reused from an earlier run of this process" if self.reused
                   else f"built in {self.build_seconds:.1f} s"))

"""``model.cache_frozen``: the same losses as without the cache, refusal where it cannot be, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dalip.errors import ConfigError
from dalip.runs import load_config
from dalip.runs.checkpoint import load_training_checkpoint
from dalip.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
# both towers frozen (the timm image projection clip.visual.head stays trained), fixed images, the
# 145 domain images (4 batches of 32 per epoch: 6 steps cross an epoch boundary, new captions drawn)
FROZEN = ["model.lock_text=true", "data.spec.augment=false", "data.spec.subsets=[domain]",
          "data.spec.eval_subsets=[domain]", "data.batch_size=32", "optim.steps=6", "run.checkpoint_every=3"]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same 6 steps without and with the cache (no final evaluation)."""
    out = {}
    for flag in ("false", "true"):
        out[flag] = tmp_path_factory.mktemp(f"cache_{flag}")
        train(load_config(TINY, [*FROZEN, f"model.cache_frozen={flag}"]), out[flag], stop_after=6)
    return out


def test_cached_run_has_exactly_the_losses_and_weights_of_the_uncached_one(runs):
    plain, cached = losses(runs["false"]), losses(runs["true"])
    assert len(plain) == 6 and all(torch.isfinite(torch.tensor(plain)))
    assert cached == plain  # bit for bit: the cache holds what the frozen towers compute
    weights = [load_training_checkpoint(runs[f] / "checkpoint.pt")["model"] for f in ("false", "true")]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name  # incl. the trained clip.visual.head
    head = "clip.visual.head.proj.weight"
    initial = load_config(TINY, [*FROZEN])  # the head did train (it is not part of the cache)
    from dalip.runs.model import build_model

    torch.manual_seed(initial.run.seed)
    assert not torch.equal(build_model(initial).state_dict()[head], weights[1][head])


def test_resume_with_the_cache_continues_the_same_run(runs, tmp_path):
    config = load_config(TINY, [*FROZEN, "model.cache_frozen=true"])
    train(config, tmp_path, stop_after=3)
    train(config, tmp_path, resume=True, stop_after=3)  # rebuilds the cache, resumes at micro-batch 3
    assert losses(tmp_path) == losses(runs["false"])


@pytest.mark.parametrize(("override", "message"), [
    ("model.lock_text=false", r"the text tower is not fully locked \(model.lock_text=false"),
    ("model.unlocked_image_groups=1", r"the image tower is not fully locked .*model.unlocked_image_groups=1"),
    ("model.unlocked_text_layers=2", r"set model.lock_text=true and model.unlocked_text_layers=0"),
    ("data.spec.augment=true", r"training augmentation is on .*set data.spec.augment=false"),
    ("data.spec.domain_fraction=0.5", r"data.spec.domain_fraction mixes two sources"),
])
def test_refused_where_cached_outputs_would_differ(override, message):
    with pytest.raises(ConfigError, match=r"^model.cache_frozen: .*" + message):
        load_config(TINY, [*FROZEN, "model.cache_frozen=true", override])


def test_quickstart_defaults_are_refused_with_every_reason():
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", ["model.cache_frozen=true", "model.lock_text=false"])
    text = str(err.value)
    assert "text tower is not fully locked" in text and "augmentation is on" in text and "image tower" not in text
    load_config("quickstart", ["model.cache_frozen=true", "data.spec.augment=false"])  # the fitting case passes


def test_trainable_parameters_and_epoch_dependent_datasets_are_refused_at_build():
    """What the config cannot show: a tower parameter left trainable, a dataset that redraws its samples."""
    from torch.utils.data import Dataset, IterableDataset

    from dalip.runs.model import build_model
    from dalip.train.frozen_cache import FrozenTowerCache, check_cacheable_dataset

    config = load_config(TINY, [*FROZEN, "model.cache_frozen=true"])
    model = build_model(config)
    model.clip.text.ln_final.weight.requires_grad_(True)
    with pytest.raises(ConfigError, match=r"the text tower has trainable parameters \(clip.text.ln_final.weight\)"):
        FrozenTowerCache.build(model, [], None, config, torch.device("cpu"), progress=False)

    class Stream(IterableDataset):
        def __iter__(self):
            yield from ()

    class Redrawn(Dataset):
        def set_epoch(self, epoch):
            pass

    with pytest.raises(ConfigError, match="a stream without sample indices"):
        check_cacheable_dataset(Stream())
    with pytest.raises(ConfigError, match="redraws its samples every epoch"):
        check_cacheable_dataset(Redrawn())


def test_cache_holds_the_frozen_outputs_and_encodes_unseen_captions():
    """Rows equal a direct tower pass on a training batch; the timm head is applied per step; new captions are added."""
    from dalip.data import build_train_dataset
    from dalip.models import get_tokenizer
    from dalip.runs.data import make_spec
    from dalip.runs.model import build_model
    from dalip.train.builders import set_train_mode
    from dalip.train.frozen_cache import FrozenTowerCache, KeyedBatch, apply_tail

    config = load_config(TINY, [*FROZEN, "model.cache_frozen=true"])
    model, tokenizer = build_model(config), get_tokenizer(config.model.name)
    dataset = build_train_dataset(make_spec(config, model))
    cache = FrozenTowerCache.build(model, dataset, tokenizer, config, torch.device("cpu"), progress=False)
    assert len(cache.images) == len(dataset) and len(cache.texts) > len(dataset)  # every template of every image
    assert cache.nbytes() == cache.images.nbytes() + cache.texts.nbytes() > 0
    indices = torch.randperm(len(dataset))[: config.data.batch_size]  # a batch as training draws one
    samples = [dataset[i] for i in indices.tolist()]
    texts = ["an emoji of a never seen thing.", *(s[1] for s in samples[1:])]
    image_core, text_core = cache.lookup(KeyedBatch(indices, texts))
    assert cache.encoded_later == 1 and "an emoji of a never seen thing." in cache.texts
    set_train_mode(model, config)
    with torch.no_grad():
        direct_image = model.tower("image", torch.stack([s[0] for s in samples]))
        direct_text = model.tower("text", tokenizer(texts))
        assert not torch.equal(image_core.pooled, direct_image.pooled)  # the cache holds the head's input
        full_image = apply_tail(model, "image", image_core)
    for got, want in ((full_image, direct_image), (text_core, direct_text)):
        for field in ("tokens", "mask", "guide", "pooled"):
            a, b = getattr(got, field), getattr(want, field)
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), field


def test_runs_of_one_process_share_a_cache_of_the_same_towers(runs, tmp_path):
    """`FrozenCachePool`: a second run on the same frozen towers and data reuses the cache, losses unchanged."""
    from dalip.train.frozen_cache import FrozenCachePool

    pool = FrozenCachePool()
    config = load_config(TINY, [*FROZEN, "model.cache_frozen=true"])
    train(config, tmp_path / "first", stop_after=6, frozen_caches=pool)
    train(config, tmp_path / "again", stop_after=6, frozen_caches=pool)  # e.g. another head variant
    assert (pool.builds, pool.reuses) == (1, 1)
    assert losses(tmp_path / "first") == losses(tmp_path / "again") == losses(runs["false"])
    # other frozen weights (another seed of the random towers) or other data: a build of its own
    for override in ("run.seed=1", "data.spec.image_size=48"):
        train(load_config(TINY, [*FROZEN, "model.cache_frozen=true", override]), tmp_path / override,
              stop_after=1, frozen_caches=pool)
    assert (pool.builds, pool.reuses) == (3, 1)


def test_fingerprint_covers_the_frozen_weights_not_the_trained_tail():
    from dalip.runs.model import build_model
    from dalip.train.batches import build_data
    from dalip.train.distributed import init_distributed
    from dalip.train.frozen_cache import frozen_fingerprint

    config = load_config(TINY, [*FROZEN, "model.cache_frozen=true"])
    torch.manual_seed(0)
    model = build_model(config)
    dataset = build_data(config, init_distributed(), model, keyed=True).train_set
    cpu = torch.device("cpu")
    before = frozen_fingerprint(model, dataset, config, cpu)
    with torch.no_grad():
        model.clip.visual.head.proj.weight.add_(1.0)  # the trained tail: not part of the cache
        model.clip.logit_scale.add_(1.0)
    assert frozen_fingerprint(model, dataset, config, cpu) == before
    with torch.no_grad():
        weight = next(model.clip.visual.trunk.parameters())
        weight[(0,) * weight.ndim] += 1e-3  # one frozen weight
    assert frozen_fingerprint(model, dataset, config, cpu) != before

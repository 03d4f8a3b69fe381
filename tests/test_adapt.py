"""Few-shot adaptation (dalip.adapt): synthetic features with known answers and a tiny real model."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dalip.adapt import (
    ALPHAS,
    BETAS,
    DACAdapter,
    DACConfig,
    FewShotFeatures,
    FewShotImages,
    LinearProbe,
    ResidualAdapter,
    SupportSet,
    TextModulation,
    TipAdapter,
    TipAdapterF,
    ZeroShot,
    cache_features,
    csv_task,
    default_methods,
    leave_one_out_accuracy,
    load_frozen_model,
    run_few_shot,
    sample_support,
    support_set,
    text_logits,
    tip_logits,
    write_results,
)
from dalip.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
STEPS = 30
Tensor = torch.Tensor


def synthetic(classes: int = 5, dim: int = 32, pool: int = 40, test: int = 50, views: int = 3,
              text_noise: float = 4.0, seed: int = 0) -> FewShotFeatures:
    """Clustered unit features whose class text embeddings are noisy copies of the centres."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)

    def around(labels: Tensor, *lead: int) -> Tensor:
        noise = torch.randn(*lead, len(labels), dim, generator=g) / dim**0.5
        return F.normalize(centres[labels] + 0.6 * noise, dim=-1)

    pool_labels, test_labels = torch.arange(pool) % classes, torch.arange(test) % classes
    text = F.normalize(centres + text_noise * torch.randn(classes, dim, generator=g) / dim**0.5, dim=-1)
    return FewShotFeatures("first", around(pool_labels, views), pool_labels, around(test_labels, 1)[0],
                           test_labels, text, [f"class {c}" for c in range(classes)])



@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small fits run fastest on one thread (and do not fight other jobs for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def features() -> FewShotFeatures:
    return synthetic()


@pytest.fixture(scope="module")
def support(features) -> SupportSet:
    return support_set(features, sample_support(features.pool_labels, 4, 0))


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


# ------------------------------------------------------------------ sampling
def test_sample_support_counts_and_seed():
    labels = torch.tensor([0] * 5 + [1] * 2 + [2] * 4)
    a = sample_support(labels, 3, seed=1)
    assert torch.bincount(labels[a.indices]).tolist() == [3, 2, 3]
    assert a.short == {1: 2}  # class 1 has only two images: all taken and reported
    assert torch.equal(a.indices, sample_support(labels, 3, seed=1).indices)
    assert not torch.equal(a.indices, sample_support(labels, 3, seed=2).indices)


def test_sample_support_errors():
    with pytest.raises(ValueError, match="shots"):
        sample_support(torch.tensor([0, 1]), 0, 0)
    with pytest.raises(ValueError, match="empty class"):
        sample_support(torch.tensor([0, 2]), 1, 0)  # class 1 has no images


def test_support_set_shapes(features, support):
    assert support.views.shape == (3, 20, 32) and support.labels.shape == (20,)
    x, y = support.flat()
    assert x.shape == (60, 32) and torch.equal(y[:20], support.labels) and torch.equal(y[20:40], support.labels)
    assert support.flat(use_views=False)[0].shape == (20, 32)


# ------------------------------------------------------------------ methods
@pytest.mark.parametrize("name", list(default_methods(STEPS)))
def test_methods_shapes_and_determinism(name, features, support):
    method = default_methods(STEPS)[name]
    a, b = method.fit(support, seed=3)(features.test), method.fit(support, seed=3)(features.test)
    assert a.shape == (50, 5) and torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_tip_adapter_formula_against_a_direct_loop(features, support):
    alpha, beta = 0.7, 3.0
    logits = TipAdapter(alpha, beta, search=False).fit(support)(features.test)
    keys = F.normalize(support.views.mean(0), dim=-1)
    expected = torch.zeros(50, 5)
    for n, f in enumerate(features.test):
        for c in range(5):
            expected[n, c] = 100 * f @ support.text[c]
            for key, label in zip(keys, support.labels):
                if label == c:
                    expected[n, c] += alpha * torch.exp(-beta * (1 - f @ key))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-4)
    values = F.one_hot(support.labels, 5).float()
    torch.testing.assert_close(tip_logits(features.test, support.text, keys, values, 0.0, beta),
                               text_logits(features.test, support.text))


def test_tip_adapter_search_uses_leave_one_out(support):
    keys = F.normalize(support.views.mean(0), dim=-1)
    alpha, beta = TipAdapter().hyperparameters(support, keys)
    assert alpha in ALPHAS and beta in BETAS
    best = leave_one_out_accuracy(support, keys, alpha, beta)
    assert best >= leave_one_out_accuracy(support, keys, 1.0, 5.5)
    assert TipAdapter(0.3, 2.0, search=False).hyperparameters(support, keys) == (0.3, 2.0)


def test_zero_shot_is_the_text_classifier(features, support):
    torch.testing.assert_close(ZeroShot().fit(support)(features.test), 100 * features.test @ features.text.T)


@pytest.mark.parametrize("method", [
    LinearProbe(), TipAdapterF(steps=STEPS), DACAdapter(DACConfig(steps=STEPS)),
    DACAdapter(DACConfig(steps=STEPS, text_modulation=False)),
    DACAdapter(DACConfig(steps=STEPS, adapter=False, intra_weight=0.0)),
], ids=lambda m: m.name if hasattr(m, "name") else str(m))
def test_training_improves_support_accuracy_over_zero_shot(method, support):
    zero = accuracy(ZeroShot().fit(support)(support.features), support.labels)
    trained = accuracy(method.fit(support)(support.features), support.labels)
    assert zero < 0.9 and trained > zero


def test_linear_probe_chooses_decay_by_cross_validation(support):
    probe = LinearProbe(weight_decays=(1e-4, 100.0))
    assert probe.choose_decay(support) == 1e-4  # a huge decay underfits the held-out fold
    first = torch.tensor([int(torch.nonzero(support.labels == c)[0]) for c in range(5)])
    one_shot = replace(support, views=support.views[:, first], labels=support.labels[first])
    assert one_shot.labels.unique().numel() == 5
    assert probe.choose_decay(one_shot) == probe.default_decay  # 1 shot: no folds


# ------------------------------------------------------------------ DAC parts and switches
def test_residual_adapter_starts_at_identity():
    x = F.normalize(torch.randn(7, 16), dim=-1)
    torch.testing.assert_close(ResidualAdapter(16, reduction=4)(x), x)
    with pytest.raises(ValueError, match="reduction"):
        ResidualAdapter(4, reduction=8)


def test_text_modulation_starts_at_the_frozen_text_and_penalises_change():
    text = F.normalize(torch.randn(3, 8), dim=-1)
    mod = TextModulation(text)
    torch.testing.assert_close(mod(), text)
    assert mod.penalty().item() == 0
    with torch.no_grad():
        mod.shift.add_(0.1)
    assert mod.penalty().item() > 0 and not torch.allclose(mod(), text)
    assert TextModulation(text, scale=False).gain is None


def test_dac_switches(features, support):
    both_off = DACAdapter(DACConfig(adapter=False, text_modulation=False, intra_weight=0.0, steps=STEPS))
    torch.testing.assert_close(both_off.fit(support)(features.test), text_logits(features.test, support.text))
    text_only = DACAdapter(DACConfig(adapter=False, intra_weight=0.0, steps=STEPS))
    adapter, text = text_only.build(support)
    assert adapter is None and isinstance(text, TextModulation)
    image_only = DACAdapter(DACConfig(text_modulation=False, steps=STEPS))
    adapter, text = image_only.build(support)
    assert isinstance(adapter, ResidualAdapter) and text is None
    # the intra-modal term and the noise change the fit; the CE-only variant differs from the full one
    full = DACAdapter(DACConfig(steps=STEPS)).fit(support)(features.test)
    no_intra = DACAdapter(DACConfig(steps=STEPS, intra_weight=0.0)).fit(support)(features.test)
    no_noise = DACAdapter(DACConfig(steps=STEPS, feature_noise=0.0)).fit(support)(features.test)
    no_views = DACAdapter(DACConfig(steps=STEPS, use_views=False)).fit(support)(features.test)
    for other in (no_intra, no_noise, no_views):
        assert not torch.allclose(full, other)


@pytest.mark.parametrize("bad, match", [
    ({"ce_weight": 0.0}, "text_modulation"),
    ({"adapter": False}, "intra_modal"),
    ({"text_modulation": False, "intra_weight": 0.0, "ce_weight": 0.0}, "needs a loss"),
    ({"feature_noise": -1.0}, ">= 0"),
])
def test_dac_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        DACConfig(**bad)


# ------------------------------------------------------------------ harness and report
def test_run_few_shot_is_deterministic_and_reports(features, tmp_path):
    methods = {k: v for k, v in default_methods(STEPS).items() if k in ("zero-shot", "tip-adapter", "dac")}
    feats = {"first": features, "second": replace(features, embedding="second")}
    rows = run_few_shot(feats, methods, [1, 2], [0, 1], "synthetic", progress=False)
    again = run_few_shot(feats, methods, [1, 2], [0, 1], "synthetic", progress=False)
    assert len(rows) == 2 * 2 * 2 * 3
    assert [replace(r, seconds=0) for r in rows] == [replace(r, seconds=0) for r in again]
    assert {r.support_size for r in rows if r.shots == 2} == {10}
    paths = write_results(rows, tmp_path, header=["# synthetic"])
    assert all(p.is_file() for p in paths.values())
    table = paths["md"].read_text()
    assert "### first embedding" in table and "### second embedding" in table and "±" in table
    assert "dac minus the best baseline" in table
    with paths["csv"].open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    with pytest.raises(ValueError, match="shots"):
        run_few_shot(feats, methods, [0], [0], progress=False)


# ------------------------------------------------------------------ a tiny real model
def tiny_task(classes: int = 3, per_class: int = 4) -> FewShotImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per_class, 24, 24, 3), dtype=torch.uint8, generator=g)
    labels = torch.arange(classes * per_class) % classes
    return FewShotImages("tiny", images, labels, images[:classes], labels[:classes],
                         [f"thing {c}" for c in range(classes)], ["a {}.", "the {}."])


@pytest.fixture(scope="module")
def tiny():
    return load_frozen_model(TINY)


def test_cache_features_shapes_and_frozen_weights(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    task = tiny_task()
    feats = cache_features(tiny.model, tiny.tokenizer, task, ("first", "second", "combined"), views=2,
                           image_size=tiny.image_size, progress=False)
    assert feats["first"].pool.shape == (3, 12, 32) and feats["combined"].pool.shape == (3, 12, 64)
    assert feats["second"].test.shape == (3, 32) and feats["first"].text.shape == (3, 32)
    torch.testing.assert_close(feats["first"].pool.norm(dim=-1), torch.ones(3, 12))
    assert not torch.allclose(feats["first"].pool[0], feats["first"].pool[1])  # augmented views differ
    again = cache_features(tiny.model, tiny.tokenizer, task, ("first",), views=2, progress=False)
    torch.testing.assert_close(again["first"].pool, feats["first"].pool)  # seeded augmentation
    run_few_shot(feats, default_methods(STEPS), [2], [0], progress=False)
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in tiny.model.parameters()) and not tiny.model.training
    with pytest.raises(ValueError, match="unknown embedding"):
        cache_features(tiny.model, tiny.tokenizer, task, ("third",), progress=False)


def test_csv_task(tmp_path):
    rows = ["filepath\ttitle"]
    for i in range(8):
        Image.fromarray(np.full((10, 10, 3), 30 * i, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png\t{'cat' if i % 2 else 'dog'}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    task = csv_task(tmp_path / "data.csv", image_size=16)
    assert task.classnames == ["cat", "dog"]
    assert len(task.pool_labels) + len(task.test_labels) == 8 and task.pool_images.shape[1:] == (16, 16, 3)
    assert torch.bincount(task.test_labels).tolist() == [1, 1]
    (tmp_path / "test.csv").write_text("filepath\ttitle\n0.png\tbird\n")
    with pytest.raises(ValueError, match="empty class"):
        csv_task(tmp_path / "data.csv", tmp_path / "test.csv")


def test_cli_smoke(tmp_path):
    assert main(["adapt", "--config", TINY, "--smoke", "--embeddings", "first", "combined",
                 "--methods", "zero-shot", "tip-adapter", "dac", "--output", str(tmp_path), "--quiet"]) == 0
    table = (tmp_path / "results.md").read_text()
    assert "twemoji-domain" in table and "K=2" in table and "### combined embedding" in table



@pytest.mark.parametrize("flags, message", [
    (["--shots", "0"], "--shots must be >= 1, got 0"),
    (["--shots", "2", "-1"], "--shots must be >= 1, got -1"),
    (["--seeds", "-1"], "--seeds must be >= 0, got -1"),
    (["--views", "0"], "--views must be >= 1"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--test-fraction", "1.5"], "--test-fraction must be in (0, 1)"),
    (["--dataset", "csv"], "--dataset csv needs --csv"),
    (["--methods", "magic"], "--methods: unknown ['magic']"),
])
def test_cli_bad_arguments_are_one_line_errors(tmp_path, capsys, flags, message):
    """Refused before any model is loaded: one `dalip adapt: error:` line, exit 2."""
    assert main(["adapt", "--config", TINY, *flags, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dalip adapt: error: ") and message in err and err.count("\n") == 1


def test_example_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "few_shot.py"), "--smoke", "--config", TINY, "--output", str(tmp_path)],
        check=False, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "zero-shot" in result.stdout and (tmp_path / "results.png").is_file()

"""One battery for every registered loss, plus references: open_clip, torch.cov, naive SupCon."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss as SigLipRef

from dalip import UnknownComponentError
from dalip.losses import AlignmentLoss, create_loss, list_losses, register_loss

ALL = list_losses()
# losses whose constructor needs an argument to exist at all
REQUIRED = {"combined": {"terms": {"clip": 1.0, "coral": 0.5}}}


def model_output(b: int = 8, d1: int = 16, d2: int = 12, grad: bool = False) -> dict:
    """A model-output dict with every key any loss reads; features L2-normalised."""
    feats = {
        key: F.normalize(torch.randn(b, d), dim=-1).requires_grad_(grad)
        for key, d in [("image_features", d1), ("text_features", d1), ("image_second", d2), ("text_second", d2)]
    }
    scales = {
        "logit_scale": torch.tensor(10.0), "logit_bias": torch.tensor(-5.0),
        "second_logit_scale": torch.tensor(7.0), "second_logit_bias": torch.tensor(-3.0),
    }
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3])[:b]
    return {**feats, **{k: v.requires_grad_(grad) for k, v in scales.items()}, "labels": labels, "extra": "ignored"}


def first(out: dict) -> tuple:
    return out["image_features"], out["text_features"]


def second(out: dict) -> tuple:
    return out["image_second"], out["text_second"]


# ---- the battery -----------------------------------------------------------------


def test_registered_names():
    assert set(ALL) >= {"clip", "siglip", "distribution", "coral", "cauchy_schwarz", "combined", "intra_modal"}


@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name):
    loss_fn = create_loss(name, **REQUIRED.get(name, {}))
    assert isinstance(loss_fn, AlignmentLoss)
    out = model_output(grad=True)
    total = loss_fn(**out)
    assert total.shape == () and torch.isfinite(total)
    total.backward()
    grads = [v.grad for k, v in out.items() if isinstance(v, torch.Tensor) and v.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_parts_sum_to_total(name):
    loss_fn = create_loss(name, **REQUIRED.get(name, {}))
    total, parts = loss_fn(**model_output(grad=True), output_dict=True)
    assert parts.keys() == loss_fn.weights.keys()
    assert all(not v.requires_grad and v.shape == () for v in parts.values())
    expected = sum(loss_fn.weights[k] * v for k, v in parts.items())
    torch.testing.assert_close(total.detach(), expected)


@pytest.mark.parametrize("name", ALL)
def test_deterministic_and_stateless(name):
    loss_fn = create_loss(name, **REQUIRED.get(name, {}))
    out = model_output()
    assert torch.equal(loss_fn(**out), loss_fn(**out))


def test_list_losses_wildcards():
    assert list_losses("c*") == ["cauchy_schwarz", "clip", "combined", "coral"]
    assert list_losses("*lip") == ["clip", "siglip"]
    assert list_losses("nothing*") == []
    assert list_losses() == sorted(list_losses())


def test_register_preset_and_unknown_name():
    from dalip.losses import DistributionLoss
    from dalip.losses.factory import LOSSES

    register_loss("test_distribution_siglip", defaults={"base": "siglip"})(DistributionLoss)
    try:
        loss_fn = create_loss("test_distribution_siglip", alpha=0.25)
        assert loss_fn.base == "siglip" and loss_fn.alpha == 0.25
    finally:
        LOSSES._entries.pop("test_distribution_siglip")
    with pytest.raises(UnknownComponentError, match="Did you mean 'clip'"):
        create_loss("clpi")
    with pytest.raises(TypeError, match="temperature"):
        create_loss("clip", temperature=0.1)


# ---- contrastive references -------------------------------------------------------


def test_clip_equals_open_clip_exactly():
    out = model_output(grad=True)
    ours = create_loss("clip")(**out)
    ref = open_clip.ClipLoss()(*first(out), out["logit_scale"])
    assert torch.equal(ours, ref)
    # logit_bias shifts every logit alike: no effect on a softmax cross-entropy
    torch.testing.assert_close(ours, open_clip.ClipLoss()(*first(out), out["logit_scale"], out["logit_bias"]))


def test_siglip_equals_open_clip():
    out = model_output()
    # open_clip 3.3: SigLipLoss()(image_features, text_features, logit_scale, logit_bias)
    ref = SigLipRef()(*first(out), out["logit_scale"], out["logit_bias"])
    torch.testing.assert_close(create_loss("siglip")(**out), ref, rtol=0, atol=0)
    ref2 = SigLipRef()(*second(out), out["second_logit_scale"], out["second_logit_bias"])
    torch.testing.assert_close(create_loss("siglip", order="second", separate_scales=True)(**out), ref2)


def test_siglip_matches_method_formula():
    """-(1/N) sum_ij log sigmoid(z_ij (t x_i.y_j + b)), z = +1 on the diagonal, -1 elsewhere."""
    out = model_output()
    x, y = first(out)
    t, b = out["logit_scale"], out["logit_bias"]
    n = x.shape[0]
    z = 2 * torch.eye(n) - 1
    ref = -sum(math.log(torch.sigmoid(z[i, j] * (t * x[i] @ y[j] + b))) for i in range(n) for j in range(n)) / n
    assert create_loss("siglip")(**out).item() == pytest.approx(ref, rel=1e-5)


# ---- distribution and composition ---------------------------------------------------


def test_distribution_alpha_one_is_clip_exactly_without_second():
    out = model_output(grad=True)
    out["image_second"] = out["text_second"] = None
    total, parts = create_loss("distribution", alpha=1.0)(**out, output_dict=True)
    assert torch.equal(total, open_clip.ClipLoss()(*first(out), out["logit_scale"]))
    assert list(parts) == ["first"]


@pytest.mark.parametrize("base", ["clip", "siglip"])
def test_distribution_is_the_weighted_sum(base):
    out = model_output()
    total, parts = create_loss("distribution", alpha=0.3, base=base)(**out, output_dict=True)
    pair_loss = create_loss(base)
    x = {**out, "image_features": out["image_second"], "text_features": out["text_second"]}
    expected = 0.3 * pair_loss(**out) + 0.7 * pair_loss(**x)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(parts["second"], pair_loss(**x))


def test_distribution_alpha_zero_and_separate_scales():
    out = model_output()
    ours = create_loss("distribution", alpha=0.0, separate_scales=True)(**out)
    ref = open_clip.ClipLoss()(*second(out), out["second_logit_scale"])
    assert torch.equal(ours, ref)


def test_distribution_with_aux_terms_and_options():
    out = model_output()
    loss_fn = create_loss(
        "distribution",
        alpha=0.5,
        aux={"coral": {"weight": 2.0, "order": "second"}, "cauchy_schwarz": 0.1},
    )
    total, parts = loss_fn(**out, output_dict=True)
    assert list(parts) == ["first", "second", "coral", "cauchy_schwarz"]
    assert loss_fn.weights == {"first": 0.5, "second": 0.5, "coral": 2.0, "cauchy_schwarz": 0.1}
    torch.testing.assert_close(parts["coral"], create_loss("coral", order="second")(**out))
    torch.testing.assert_close(parts["cauchy_schwarz"], create_loss("cauchy_schwarz")(**out))
    expected = 0.5 * parts["first"] + 0.5 * parts["second"] + 2.0 * parts["coral"] + 0.1 * parts["cauchy_schwarz"]
    torch.testing.assert_close(total, expected)


def test_combined_nests_and_names_every_part():
    out = model_output()
    loss_fn = create_loss(
        "combined",
        terms={
            "dalip": {"loss": "distribution", "alpha": 0.3},
            "coral2": {"loss": "coral", "order": "second", "weight": 0.5},
            "supcon": {"loss": "intra_modal", "weight": 0.0},  # weight 0: not built, labels not read
            "mine": {"loss": create_loss("siglip"), "weight": 2.0},
        },
    )
    total, parts = loss_fn(**{k: v for k, v in out.items() if k != "labels"}, output_dict=True)
    assert list(parts) == ["dalip.first", "dalip.second", "coral2", "mine"]
    assert loss_fn.weights == pytest.approx({"dalip.first": 0.3, "dalip.second": 0.7, "coral2": 0.5, "mine": 2.0})
    expected = create_loss("distribution", alpha=0.3)(**out) + 0.5 * parts["coral2"] + 2.0 * parts["mine"]
    torch.testing.assert_close(total, expected)


# ---- coral and Cauchy-Schwarz ------------------------------------------------------


@pytest.mark.parametrize("which", ["first", "second"])
def test_coral_against_torch_cov(which):
    out = model_output()
    x, y = first(out) if which == "first" else second(out)
    d = x.shape[1]
    ref = (torch.cov(x.T) - torch.cov(y.T)).square().sum() / (4 * d**2)
    torch.testing.assert_close(create_loss("coral", order=which)(**out), ref)


def test_coral_is_zero_for_a_shifted_copy():
    out = model_output()
    out["text_features"] = out["image_features"] + 3.0  # covariance ignores the mean
    assert create_loss("coral")(**out).item() == pytest.approx(0.0, abs=1e-10)


def test_cauchy_schwarz_nonnegative_and_zero_for_identical_sets():
    loss_fn = create_loss("cauchy_schwarz", sigma=0.5)
    for seed in range(5):
        torch.manual_seed(seed)
        out = model_output()
        assert loss_fn(**out) >= 0
        out["text_features"] = out["image_features"].clone()
        assert loss_fn(**out) == 0
    out = model_output()
    out["text_features"] = out["image_features"][torch.randperm(8)]  # the same set in another order
    assert loss_fn(**out) == pytest.approx(0.0, abs=1e-6)


def test_cauchy_schwarz_against_direct_formula():
    out = model_output()
    x, y = (t.double() for t in first(out))
    sigma = 0.7

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).square() / (2 * sigma**2)).mean().log()

    ref = k(x, x) + k(y, y) - 2 * k(x, y)
    torch.testing.assert_close(create_loss("cauchy_schwarz", sigma=sigma)(**out).double(), ref, rtol=1e-5, atol=1e-6)


def test_cauchy_schwarz_stable_for_tiny_sigma():
    out = model_output(grad=True)
    value = create_loss("cauchy_schwarz", sigma=1e-3)(**out)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(out["image_features"].grad).all()


def test_statistics_in_float32_under_autocast():
    out = model_output()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name in ["coral", "cauchy_schwarz"]:
            assert create_loss(name)(**out).dtype == torch.float32


# ---- intra-modal SupCon ------------------------------------------------------------


def naive_supcon(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-anchor loop, straight from Khosla et al. eq. 2 (L_out), in float64."""
    z = z.double()
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / temperature) for a in others)
        losses.append(-sum(torch.log(torch.exp(z[i] @ z[p] / temperature) / denom) for p in positives) / len(positives))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_intra_modal_against_naive(modality, temperature):
    out = model_output()  # label 3 has one sample: an anchor without positives
    ours = create_loss("intra_modal", modality=modality, temperature=temperature)(**out)
    ref = naive_supcon(out[f"{modality}_features"], out["labels"], temperature)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    second_ours = create_loss("intra_modal", modality=modality, order="second", temperature=temperature)(**out)
    torch.testing.assert_close(second_ours.double(), naive_supcon(out[f"{modality}_second"], out["labels"], temperature))


def test_intra_modal_normalize_and_no_positives():
    out = model_output(grad=True)
    raw = {**out, "image_features": out["image_features"] * 3.0}
    torch.testing.assert_close(create_loss("intra_modal", normalize=True)(**raw), create_loss("intra_modal")(**out))
    distinct = {**out, "labels": torch.arange(8)}
    value = create_loss("intra_modal")(**distinct)
    value.backward()
    assert value == 0 and torch.isfinite(out["image_features"].grad).all()


# ---- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, change, message",
    [
        ("clip", {}, {"text_features": torch.randn(7, 16)}, "mismatched batch sizes"),
        ("clip", {}, {"text_features": torch.randn(8, 15)}, "mismatched feature dims"),
        ("clip", {}, {"image_features": torch.randn(8, 2, 16)}, r"shape \(B, D\)"),
        ("clip", {}, {"logit_scale": None}, "'logit_scale'"),
        ("clip", {}, {"logit_scale": torch.ones(3)}, "must be a scalar"),
        ("siglip", {}, {"logit_bias": None}, "'logit_bias'"),
        ("distribution", {}, {"image_second": None}, "'image_second'.*second-order head"),
        ("distribution", {"separate_scales": True}, {"second_logit_scale": None}, "'second_logit_scale'"),
        ("coral", {}, {"image_features": torch.randn(1, 16), "text_features": torch.randn(1, 16)}, "at least 2"),
        ("intra_modal", {}, {"labels": None}, "'labels'"),
        ("intra_modal", {}, {"labels": torch.zeros(7)}, r"labels must have shape \(8,\)"),
    ],
)
def test_input_errors(name, options, change, message):
    out = {**model_output(), **change}  # a None value counts as missing
    with pytest.raises(ValueError, match=message):
        create_loss(name, **options)(**out)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("distribution", {"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ("distribution", {"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
        ("distribution", {"aux": {"first": 1.0}}, "aux terms may not be named"),
        ("distribution", {"base_options": {"order": "second"}}, "base_options may not set"),
        ("clip", {"order": "third"}, "order must be one of"),
        ("clip", {"separate_scales": True}, "order='second' only"),
        ("clip", {"rank": 2, "world_size": 2}, "rank must be in"),
        ("cauchy_schwarz", {"sigma": 0.0}, "sigma must be > 0"),
        ("intra_modal", {"modality": "audio"}, "modality must be one of"),
        ("intra_modal", {"temperature": 0.0}, "temperature must be > 0"),
        ("combined", {"terms": {}}, "no term with a non-zero weight"),
        ("combined", {"terms": {"clip": -1.0}}, "weight must be finite and >= 0"),
        ("combined", {"terms": {"a.b": {"loss": "clip"}}}, "contain no '.'"),
        ("combined", {"terms": {"x": {"loss": create_loss("clip"), "sigma": 1.0}}}, "already built loss"),
    ],
)
def test_option_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        create_loss(name, **options)(**model_output())


def test_term_spec_of_wrong_type():
    with pytest.raises(TypeError, match="expected a weight or a dict"):
        create_loss("combined", terms={"clip": "heavy"})


def test_unknown_term_name_lists_known_losses():
    with pytest.raises(UnknownComponentError, match="unknown loss 'corall'.*'coral'"):
        create_loss("combined", terms={"corall": 1.0})


def test_learnable_alpha_weighs_the_pairs_and_gets_the_analytic_gradient():
    """d total / d logit = sigmoid'(logit) * (first - second) for total = a * first + (1 - a) * second."""
    from dalip.losses import create_loss

    torch.manual_seed(0)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s), dim=-1)  # noqa: E731
    out = {"image_features": unit(6, 8), "text_features": unit(6, 8), "image_second": unit(6, 5),
           "text_second": unit(6, 5), "logit_scale": torch.tensor(10.0)}
    logit = torch.tensor(0.7, requires_grad=True)
    loss = create_loss("distribution", alpha=0.5)
    total, parts = loss(**out, alpha=torch.sigmoid(logit), output_dict=True)
    a = torch.sigmoid(logit).item()
    assert total.item() == pytest.approx(a * parts["first"].item() + (1 - a) * parts["second"].item(), rel=1e-6)
    total.backward()
    assert logit.grad.item() == pytest.approx(a * (1 - a) * (parts["first"] - parts["second"]).item(), rel=1e-5)
    fixed = create_loss("distribution", alpha=0.5)(**out)  # no alpha output: the fixed weight
    assert fixed.item() == pytest.approx(0.5 * (parts["first"] + parts["second"]).item(), rel=1e-6)

"""One battery for every registered pooler, plus pooler-specific references."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import DIM, make_batch

import dalip
from dalip.pooling import POOLERS, value_checks
from dalip.pooling import functional as Fn

ALL = dalip.list_poolers()


def build(name: str, **extra):
    """The pooler at test size: a small reduced dimension wherever it has one."""
    small = {"reduced_dim": 6} if "reduced_dim" in POOLERS.get(name).signature.parameters else {}
    return dalip.create_pooler(name, dim=DIM, **{**small, **extra})


@pytest.mark.parametrize("name", ALL)
def test_defaults_work(name):
    pool = dalip.create_pooler(name, dim=DIM)
    tokens, mask, guide = make_batch()
    assert pool(tokens, mask=mask, guide=guide).shape == (3, pool.out_dim)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_shapes(name):
    pool = build(name)
    tokens, mask, guide = make_batch()
    tokens.requires_grad_(True)
    guide.requires_grad_(True)
    out = pool(tokens, mask=mask, guide=guide)
    assert out.shape == (3, pool.out_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    grads = [p.grad for p in pool.parameters()] + [tokens.grad if name != "cls" else guide.grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if name != "cls":  # padded tokens receive no gradient
        assert torch.all(tokens.grad[~mask] == 0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_padded_tokens_have_no_influence(name, train):
    pool = build(name).train(train)
    tokens, mask, guide = make_batch()
    changed = tokens.clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 100
    torch.manual_seed(1)
    a = pool(tokens, mask=mask, guide=guide)
    torch.manual_seed(1)  # same dropout draws
    b = pool(changed, mask=mask, guide=guide)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_mask_equals_truncation_in_eval(name):
    pool = build(name).eval()
    tokens, mask, guide = make_batch()
    padded = pool(tokens, mask=mask, guide=guide)
    for i in range(tokens.shape[0]):
        n = int(mask[i].sum())
        alone = pool(tokens[i : i + 1, :n], guide=guide[i : i + 1])
        torch.testing.assert_close(padded[i : i + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(1, 7), (4, 1), (1, 1)], ids=["batch1", "one_token", "batch1_one_token"])
def test_small_shapes(name, shape):
    pool = build(name)
    b, n = shape
    tokens, _, guide = make_batch(b=b, n=n)
    for train in (True, False):
        out = pool.train(train)(tokens, guide=guide)
        assert out.shape == (b, pool.out_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_float64(name):
    pool = build(name).double().eval()
    tokens, mask, guide = make_batch(dtype=torch.float64)
    assert pool(tokens, mask=mask, guide=guide).dtype == torch.float64


@pytest.mark.parametrize("name", ALL)
def test_bf16_autocast_close_to_float32(name):
    pool = build(name).eval()
    tokens, mask, guide = make_batch(b=4, n=24)
    reference = pool(tokens, mask=mask, guide=guide)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = pool(tokens, mask=mask, guide=guide)
    assert torch.isfinite(low).all()
    error = (low.float() - reference).norm() / reference.norm()
    assert error < 0.05, f"{name}: relative error {error:.3g} under bf16 autocast"


@pytest.mark.parametrize("name", ["mean", "cov", "mbdc"])
def test_torch_compile_runs(name):
    pool = build(name).eval()
    tokens, mask, guide = make_batch()
    compiled = torch.compile(pool)
    torch.testing.assert_close(compiled(tokens, mask=mask, guide=guide), pool(tokens, mask=mask, guide=guide))


@pytest.mark.parametrize("name", ALL)
def test_traces_into_one_graph_without_breaks(name):
    """torch.compile sees the whole pooler (train mode, masked): no graph break splits it into eager pieces."""
    torch._dynamo.reset()
    pool = build(name).train()
    tokens, mask, guide = make_batch()
    explanation = torch._dynamo.explain(pool)(tokens, mask=mask, guide=guide)
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", ALL)
def test_no_device_specific_tensors_in_forward(name):
    """Runs on the meta device: nothing inside forward is pinned to the CPU."""
    pool = build(name).to("meta")
    tokens, mask, guide = (t.to("meta") for t in make_batch())
    with value_checks(False):  # meta tensors have no values to check
        out = pool(tokens, mask=mask, guide=guide)
    assert out.device.type == "meta" and out.shape == (3, pool.out_dim)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ALL)
def test_bad_input_errors(name):
    pool = build(name)
    tokens, mask, guide = make_batch()
    with pytest.raises(ValueError, match=r"shape \(B, N, C\)"):
        pool(tokens[0], guide=guide)
    with pytest.raises(ValueError, match="C=16 channels"):
        pool(tokens[..., :16], guide=guide[:, :16])
    with pytest.raises(ValueError, match="mask must have shape"):
        pool(tokens, mask=mask[:, :-1], guide=guide)
    with pytest.raises(TypeError, match="mask must be boolean"):
        pool(tokens, mask=mask.float(), guide=guide)
    with pytest.raises(ValueError, match="guide must have shape"):
        pool(tokens, mask=mask, guide=guide[:2])
    with pytest.raises(TypeError, match="floating-point"):
        pool(tokens.long(), guide=guide)
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"every token is masked out in batch row\(s\) \[1\]"):
        pool(tokens, mask=empty, guide=guide)
    with value_checks(False):  # the check can be switched off for sync-free loops
        pool(tokens, mask=mask, guide=guide)


@pytest.mark.parametrize("name", ["cls", "mbdc", "mbdc_paper"])
def test_missing_guide(name):
    tokens, _, _ = make_batch()
    with pytest.raises(ValueError, match="needs guide"):
        build(name)(tokens)


def test_integer_mask_is_accepted_like_hf_attention_masks():
    pool = build("mean")
    tokens, mask, _ = make_batch()
    torch.testing.assert_close(pool(tokens, mask=mask.long()), pool(tokens, mask=mask))


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("mbdc", {"heads": 5}, "not divisible by heads=5"),
        ("mbdc", {"heads": 0}, "heads must be"),
        ("mbdc", {"norm": "group"}, "norm must be one of"),
        ("mbdc", {"dropout": 1.5}, "dropout"),
        ("bdc", {"eps": -1.0}, "eps"),
        ("cov", {"iterations": 0}, "iterations"),
        ("mean", {"dim": 0}, "dim must be a positive int"),
    ],
)
def test_bad_construction(name, options, match):
    options = {"dim": DIM, **options}
    with pytest.raises(ValueError, match=match):
        dalip.create_pooler(name, **options)


# -------------------------------------------------------- specific references
def test_cls_and_mean():
    tokens, mask, guide = make_batch()
    assert torch.equal(build("cls")(tokens, guide=guide), guide)
    expected = torch.stack([tokens[i, mask[i]].mean(0) for i in range(3)])
    torch.testing.assert_close(build("mean")(tokens, mask=mask), expected)


def test_cov_without_reduction_is_torch_cov():
    pool = dalip.create_pooler("cov", dim=5, reduced_dim=None, triu=False)
    tokens = torch.randn(2, 30, 5, dtype=torch.float64)
    out = pool.double()(tokens).view(2, 5, 5)
    for i in range(2):
        torch.testing.assert_close(out[i], torch.cov(tokens[i].T, correction=0))
    assert dalip.create_pooler("cov", dim=5, reduced_dim=None).out_dim == 15


def test_isqrt_cov_output_squares_to_covariance():
    pool = dalip.create_pooler("isqrt_cov", dim=4, reduced_dim=None, triu=False, iterations=25).double()
    tokens = torch.randn(3, 200, 4, dtype=torch.float64)
    root = pool(tokens).view(3, 4, 4)
    sigma = torch.stack([torch.cov(t.T, correction=0) for t in tokens])
    torch.testing.assert_close(root @ root, sigma, atol=1e-7, rtol=1e-6)


def test_bdc_pooler_without_reduction_is_the_functional_core():
    pool = dalip.create_pooler("bdc", dim=6, reduced_dim=None)
    tokens = torch.randn(2, 9, 6)
    expected = Fn.triu_flatten(Fn.bdc(tokens.transpose(1, 2)))
    torch.testing.assert_close(pool(tokens), expected)
    assert pool.out_dim == 21


def test_bdc_learnable_temperature_starts_at_reference_and_learns():
    tokens = torch.randn(2, 9, 6)
    fixed = dalip.create_pooler("bdc", dim=6, reduced_dim=None)
    learn = dalip.create_pooler("bdc", dim=6, reduced_dim=None, learn_scale=True)
    torch.testing.assert_close(fixed(tokens), learn(tokens))
    learn(tokens).sum().backward()
    assert learn.scale.log_temperature.grad is not None


def test_mbdc_paper_parameter_count():
    pool = dalip.create_pooler("mbdc_paper", dim=768)
    assert sum(p.numel() for p in pool.parameters()) == 22_629_528
    assert (pool.heads, pool.reduced_dim, pool.stat_dim, pool.out_dim) == (4, 46, 4324, 768)


def test_mbdc_heads_are_independent_bdc_blocks():
    """Head k's statistic depends only on channel block k of the (projected) tokens."""
    pool = dalip.create_pooler("mbdc", dim=DIM, heads=4, reduced_dim=5, in_proj=False, norm="none").eval()
    tokens, mask, guide = make_batch()
    a = pool.statistics(tokens, mask, guide)
    assert a.shape == (3, 4, 5, 5)
    changed = tokens.clone()
    changed[..., 8:16] += torch.randn(3, 11, 8)  # head 1's channels only
    b = pool.statistics(changed, mask, guide)
    assert torch.allclose(a[:, [0, 2, 3]], b[:, [0, 2, 3]]) and not torch.allclose(a[:, 1], b[:, 1])
    # and head 0 equals the functional BDC of its reduced, guide-weighted block
    d = DIM // 4
    x0 = tokens[..., :d]
    cos = torch.nn.functional.cosine_similarity(x0, guide[:, None, :d], dim=-1)  # b n
    w = dalip.pooling.guide_softmax(cos[..., None], mask)[..., 0]
    z0 = torch.relu(pool.reduce.linear(x0 * w[..., None])).transpose(1, 2)
    torch.testing.assert_close(a[:, 0], Fn.bdc(z0, mask=mask))


def test_mbdc_without_guide_weighting_needs_no_guide_and_options_change_params():
    tokens, mask, _ = make_batch()
    pool = dalip.create_pooler("mbdc", dim=DIM, guide_weighting=False, reduced_dim=4)
    assert pool(tokens, mask=mask).shape == (3, DIM)
    shared = dalip.create_pooler("mbdc", dim=DIM, heads=4, reduced_dim=4)
    per_head = dalip.create_pooler("mbdc", dim=DIM, heads=4, reduced_dim=4, shared_reduction=False)
    assert per_head.reduce.weight.shape == (4, 8, 4) and shared.reduce.linear.weight.shape == (4, 8)
    assert per_head.reduce.norm.weight.shape == (4, 4)  # per-head BatchNorm
    assert dalip.create_pooler("mbdc", dim=DIM, out_dim=10)(tokens, guide=tokens[:, 0]).shape == (3, 10)


def test_guide_softmax_is_uniform_for_equal_similarities():
    torch.testing.assert_close(dalip.pooling.guide_softmax(torch.full((2, 5, 3), 0.3), None), torch.ones(2, 5, 3))


@pytest.mark.parametrize("weight_shape", [(2, 4), (3, 4, 2)], ids=["shared", "per_head"])
def test_reduce_with_guide_cosine_gradcheck(weight_shape):
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(weight_shape, dtype=torch.float64, requires_grad=True)
    g = torch.nn.functional.normalize(torch.randn(2, 3, 4, dtype=torch.float64), dim=-1).requires_grad_(True)
    assert torch.autograd.gradcheck(dalip.pooling.ReduceWithGuideCosine.apply, (x, w, g))


@pytest.mark.parametrize("p", [0.5, 0.1, 0.9])
def test_relu_dropout_statistics_and_gradient(p):
    act = dalip.pooling.layers.ReLUDropout(p).train()
    z = torch.randn(400_001, requires_grad=True)  # not a multiple of 4 lanes
    out = act(z)
    out.sum().backward()
    positive = z.detach() > 0
    dropped = (out == 0) & positive
    assert abs(dropped.sum().item() / positive.sum().item() - p) < 0.005
    scale = out[positive & ~dropped] / z.detach()[positive & ~dropped]
    torch.testing.assert_close(scale, torch.full_like(scale, 1 / (1 - p)), rtol=1e-4, atol=0)
    assert out[~positive].abs().max() == 0  # the ReLU
    torch.testing.assert_close(z.grad, (out.detach() != 0) / (1 - p), rtol=1e-4, atol=0)  # d out / d z
    torch.manual_seed(0)
    first = act(torch.ones(100))
    torch.manual_seed(0)
    assert torch.equal(first, act(torch.ones(100)))  # seeded
    assert torch.equal(act.eval()(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
    assert torch.equal(dalip.pooling.layers.ReLUDropout(1.0).train()(torch.ones(3)), torch.zeros(3))


@pytest.mark.parametrize("weight_shape", [(2, 4), (3, 4, 2)], ids=["shared", "per_head"])
def test_guide_weighted_projection_matches_cosine_similarity_softmax(weight_shape):
    x, g = torch.randn(2, 7, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    w = torch.randn(weight_shape, dtype=torch.float64)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    cos = torch.nn.functional.cosine_similarity(x, g[:, None], dim=-1)  # b n h
    weights = cos.masked_fill(~mask[..., None], float("-inf")).softmax(1) * mask.sum(1).view(2, 1, 1)
    z = x @ w.T if w.ndim == 2 else torch.einsum("bnhd,hdr->bnhr", x, w)
    expected = z * weights[..., None]
    out = dalip.pooling.guide_weighted_projection(x, w, g, mask)
    torch.testing.assert_close(out, expected)
    assert out[1, 5:].abs().max() == 0  # padded tokens get weight 0


# ------------------------------------------------------ non-finite tokens, dtypes, sizes (issue 14)
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_a_nan_token_stays_in_its_row(name, train):
    """One NaN token in row 1: the other rows equal those of the batch without row 1, and
    BatchNorm's running statistics equal those of that batch (finite)."""
    pool = build(name, **({"dropout": 0.0} if name == "mbdc_paper" else {})).train(train)
    tokens, mask, guide = make_batch(b=4)
    bad = tokens.clone()
    bad[1, 2, 3] = float("nan")
    keep = torch.tensor([0, 2, 3])
    clean = {k: v.clone() for k, v in pool.state_dict().items()}
    reference = pool(tokens[keep], mask=mask[keep], guide=guide[keep])
    stats_reference = {k: v.clone() for k, v in pool.state_dict().items() if "running" in k}
    pool.load_state_dict(clean)
    with pytest.warns(RuntimeWarning, match=r"batch row\(s\) \[1\]"):  # value checks are on by default
        out = pool(bad, mask=mask, guide=guide)
    torch.testing.assert_close(out[keep], reference, rtol=1e-5, atol=1e-5)
    for key, value in pool.state_dict().items():
        if "running" in key:
            assert torch.isfinite(value).all()
            torch.testing.assert_close(value, stats_reference[key])
    if name != "cls":  # the row itself is not hidden: its output is not finite
        assert not torch.isfinite(out[1]).all()


def test_batch_norm_with_every_row_non_finite_keeps_its_running_stats():
    norm = dalip.pooling.MaskedBatchNorm(4).train()
    before = norm.running_mean.clone(), norm.running_var.clone()
    norm(torch.full((2, 3, 1, 4), float("inf")))
    torch.testing.assert_close((norm.running_mean, norm.running_var), before)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_every_pooler_takes_every_float_dtype_outside_autocast(name, dtype, train):
    """float32 parameters, low- or high-precision tokens: first order keeps the dtype, second
    order computes and returns at least float32 (float64 stays float64)."""
    pool = build(name).train(train)
    tokens, mask, guide = make_batch(dtype=dtype)
    out = pool(tokens, mask=mask, guide=guide)
    first_order = name in ("cls", "mean")
    expected = dtype if first_order else torch.promote_types(dtype, torch.float32)
    assert out.dtype == expected and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["cov", "isqrt_cov", "bdc", "mbdc", "mbdc_paper"])
def test_a_huge_reduced_dim_fails_at_construction(name):
    with pytest.raises(ValueError, match=r"reduced_dim=100000 .* at most"):
        dalip.create_pooler(name, dim=DIM, reduced_dim=100000)


# ------------------------------------------ BatchNorm row isolation at fused-kernel cost (issue 20, item 10)
def _norm_pair(groups: int):
    """A training MaskedBatchNorm (float64, non-trivial affine) and torch's BatchNorm1d with the same
    parameters over the ``(b n [g], d [g])`` rows: the independent reference."""
    norm = dalip.pooling.MaskedBatchNorm(5, groups=groups).double().train()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    ref = torch.nn.BatchNorm1d(norm.weight.numel()).double().train()
    with torch.no_grad():
        ref.weight.copy_(norm.weight.view(-1))
        ref.bias.copy_(norm.bias.view(-1))
    return norm, ref


@pytest.mark.parametrize("groups", [1, 3], ids=["shared", "per_group"])
def test_masked_batch_norm_in_training_is_torch_batch_norm(groups):
    """Finite tokens, no mask: outputs, input and parameter gradients and running statistics are those
    of torch's BatchNorm1d over the rows."""
    norm, ref = _norm_pair(groups)
    x = (torch.randn(4, 6, 3, 5, dtype=torch.float64) * 2 + 1).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    y, yr = norm(x), ref(xr.view(-1, ref.num_features)).view(x.shape)
    torch.testing.assert_close(y, yr)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (yr * g).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(norm.weight.grad.view(-1), ref.weight.grad)
    torch.testing.assert_close(norm.bias.grad.view(-1), ref.bias.grad)
    torch.testing.assert_close(norm.running_mean.view(-1), ref.running_mean)
    torch.testing.assert_close(norm.running_var.view(-1), ref.running_var)


@pytest.mark.parametrize("groups", [1, 3], ids=["shared", "per_group"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_masked_batch_norm_gradcheck(groups, masked):
    """The hand-written backward is the derivative of the forward (padded tokens included)."""
    norm, _ = _norm_pair(groups)
    x = torch.randn(3, 5, 3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(5) < torch.tensor([[5], [2], [4]]) if masked else None

    def run(x, weight, bias):
        return torch.func.functional_call(norm, {"weight": weight, "bias": bias}, (x, mask))

    params = norm.weight.detach().requires_grad_(), norm.bias.detach().requires_grad_()
    assert torch.autograd.gradcheck(run, (x, *params))


@pytest.mark.parametrize("groups", [1, 3], ids=["shared", "per_group"])
def test_masked_batch_norm_leaves_out_non_finite_rows_but_not_padding(groups):
    """Row 1 holds a NaN, row 2 a +inf and a -inf, row 0 an inf in a padded token only: rows 0 and 3
    get the outputs and running statistics of BatchNorm1d over the real tokens of rows 0 and 3."""
    norm, ref = _norm_pair(groups)
    x = torch.randn(4, 6, 3, 5, dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[0, 4:] = False
    x[0, 5, 1, 2] = float("inf")
    x[1, 2, 0, 3] = float("nan")
    x[2, 0, 2, 1], x[2, 3, 0, 1] = float("inf"), float("-inf")
    y = norm(x, mask)
    good = torch.tensor([0, 3])
    real = x[good][mask[good]]  # (real tokens, g, d)
    expected = ref(real.reshape(-1, ref.num_features)).view(real.shape)
    torch.testing.assert_close(y[good][mask[good]], expected)
    torch.testing.assert_close(norm.running_mean.view(-1), ref.running_mean)
    torch.testing.assert_close(norm.running_var.view(-1), ref.running_var)
    assert not torch.isfinite(y[1]).all() and not torch.isfinite(y[2]).all()  # the rows themselves show it


def test_batch_norm_isolation_needs_no_pass_of_its_own_over_the_tokens():
    """Training forward + backward touch the tokens in five element-wise passes (forward: the deviations
    and their squares for the row moments, the fused normalisation; backward: the input gradient in two
    chained products), no boolean (isfinite) pass, no host sync, and a bounded number of operators (issue
    20 item 10: the first isolation took about 60 more than the fused kernels and a dozen token passes)."""
    norm = dalip.pooling.MaskedBatchNorm(46).train()
    x = torch.randn(8, 49, 4, 46, requires_grad=True)
    ops = []

    class Record(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            first = out[0] if isinstance(out, (tuple, list)) else out
            if not func.is_view and isinstance(first, torch.Tensor):
                ops.append((func.overloadpacket.__name__, first.numel(), first.dtype))
            return out

    grad = torch.randn_like(x)
    with Record():
        norm(x).backward(grad)
    token_sized = [(name, dtype) for name, numel, dtype in ops if numel == x.numel()]
    assert len(token_sized) <= 5 and all(dtype == torch.float32 for _, dtype in token_sized), token_sized
    assert not {"_local_scalar_dense", "nonzero", "isfinite"} & {name for name, _, _ in ops}
    assert len(ops) <= 45, [name for name, _, _ in ops]


def test_value_checks_warn_only_for_real_non_finite_inputs():
    """The cheap test (one sum) never hides a bad row and never names a good one: an inf in a padded
    token, or finite values whose sum overflows, are not reported; a NaN guide is."""
    pool = build("mean")
    tokens, mask, guide = make_batch()  # row 1 has 8 real tokens of 11
    tokens[1, 9, 0] = float("inf")
    tokens[2, 0, :4] = 3e38  # finite; their float32 sum is inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pool(tokens, mask=mask, guide=guide)
    guide[0, 3] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"batch row\(s\) \[0\]"):
        pool(tokens, mask=mask, guide=guide)
    tokens[2, 1, 0] = float("-inf")
    with pytest.warns(RuntimeWarning, match=r"batch row\(s\) \[0, 2\]"):
        pool(tokens, mask=mask, guide=guide)


def test_gram_backward_is_autograd_of_the_product():
    """`functional.Gram`'s one-product backward equals autograd through ``z @ z^T`` (and gradcheck)."""
    z = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 4, 4, dtype=torch.float64)
    (ours,) = torch.autograd.grad(Fn.Gram.apply(z), z, grad)
    (reference,) = torch.autograd.grad(z @ z.transpose(-1, -2), z, grad)
    torch.testing.assert_close(ours, reference)
    assert torch.autograd.gradcheck(Fn.Gram.apply, (z,))

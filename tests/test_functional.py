"""The statistics cores against independent references (dcor, torch.cov, linalg)."""

import dcor
import pytest
import torch

from dalip.pooling import functional as Fn


def test_bdc_matches_dcor_distance_covariance():
    # two token sets with the same r: A from images, A' from text (different M)
    r, m_img, m_txt = 9, 13, 7
    z_img, z_txt = torch.randn(1, r, m_img, dtype=torch.float64), torch.randn(1, r, m_txt, dtype=torch.float64)
    a_img = Fn.bdc(z_img, scale=1.0, eps=0.0)[0]
    a_txt = Fn.bdc(z_txt, scale=1.0, eps=0.0)[0]
    ours = (a_img * a_txt).sum() / r**2
    oracle = dcor.distance_covariance_sqr(z_img[0].numpy(), z_txt[0].numpy())
    assert ours.item() == pytest.approx(oracle, rel=1e-10)
    # and the distance variance of one set
    assert ((a_img * a_img).sum() / r**2).item() == pytest.approx(
        dcor.distance_covariance_sqr(z_img[0].numpy(), z_img[0].numpy()), rel=1e-10
    )


def test_bdc_default_scale_is_one_over_2m_and_eps_inside_sqrt():
    z = torch.randn(2, 5, 8, dtype=torch.float64)
    dist = torch.cdist(z, z)  # independent Euclidean distances
    expected = torch.sqrt(dist.square() / (2 * 8) + 1e-5)
    assert torch.allclose(Fn.pairwise_distances(z), expected, atol=1e-10)
    a = Fn.bdc(z)
    # double centring: every row and column of A sums to zero, A symmetric
    assert torch.allclose(a.sum(-1), torch.zeros(2, 5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(a, a.transpose(-1, -2))
    j = torch.ones(5, 5, dtype=torch.float64) / 5  # the reference's all-ones centring
    assert torch.allclose(a, expected - j @ expected - expected @ j + j @ expected @ j)


def test_covariance_matches_torch_cov():
    z = torch.randn(3, 6, 20, dtype=torch.float64)
    ours = Fn.covariance(z)
    for i in range(3):
        assert torch.allclose(ours[i], torch.cov(z[i], correction=0), atol=1e-12)


def test_mask_equals_dropping_the_padded_tokens():
    z = torch.randn(2, 6, 10, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 7:] = False
    z_garbage = z.clone()
    z_garbage[0, :, 7:] = 1e6
    for fn in (Fn.covariance, Fn.bdc):
        full = fn(z_garbage, mask=mask)
        assert torch.allclose(full[0], fn(z[:1, :, :7])[0], atol=1e-9)
        assert torch.allclose(full[1], fn(z[1:])[0], atol=1e-9)


def test_isqrt_squared_recovers_covariance():
    z = torch.randn(4, 8, 64, dtype=torch.float64)
    sigma = Fn.covariance(z) + 0.1 * torch.eye(8, dtype=torch.float64)  # well conditioned
    root = Fn.isqrt_newton_schulz(sigma, iterations=30)
    assert torch.allclose(root @ root, sigma, atol=1e-8)
    reference = torch.linalg.eigh(sigma)
    exact = reference.eigenvectors @ torch.diag_embed(reference.eigenvalues.sqrt()) @ reference.eigenvectors.mT
    assert torch.allclose(root, exact, atol=1e-8)
    # five iterations (the paper's) are already a usable approximation
    five = Fn.isqrt_newton_schulz(sigma, iterations=5)
    assert (five @ five - sigma).norm() / sigma.norm() < 0.05


def test_isqrt_zero_matrix_stays_finite():
    assert torch.isfinite(Fn.isqrt_newton_schulz(torch.zeros(1, 3, 3))).all()
    with pytest.raises(ValueError, match="iterations"):
        Fn.isqrt_newton_schulz(torch.eye(3)[None], iterations=0)


def test_triu_flatten():
    a = torch.arange(16.0).view(1, 4, 4)
    expected = torch.tensor([[0.0, 1, 2, 3, 5, 6, 7, 10, 11, 15]])
    assert torch.equal(Fn.triu_flatten(a), expected)
    assert torch.equal(Fn.triu_flatten(a, Fn.triu_index(4)), expected)


@pytest.mark.parametrize(
    "fn",
    [
        lambda z: Fn.bdc(z),
        lambda z: Fn.bdc(z, scale=torch.tensor(0.3, dtype=torch.float64), eps=1e-3),
        lambda z: Fn.covariance(z),
        lambda z: Fn.isqrt_newton_schulz(Fn.covariance(z) + torch.eye(z.shape[1], dtype=z.dtype)),
    ],
    ids=["bdc", "bdc_scaled", "covariance", "isqrt"],
)
def test_gradcheck_float64(fn):
    z = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (z,))


def test_gradcheck_with_mask():
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    z = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: Fn.bdc(x, mask=mask), (z,))
    assert torch.autograd.gradcheck(lambda x: Fn.covariance(x, mask=mask), (z,))


def test_statistics_are_float32_under_bf16_autocast():
    z = torch.randn(2, 16, 50) * 30 + 100  # large offset: bf16 Gram cancellation would ruin it
    reference = Fn.bdc(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = Fn.bdc(z.bfloat16())
    assert ours.dtype == torch.float32
    # the only error left is rounding the input to bf16
    assert torch.allclose(ours, Fn.bdc(z.bfloat16().float()), atol=1e-5)
    assert (ours - reference).abs().max() < 0.05 * reference.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert Fn.covariance(z).dtype == torch.float32


def test_functional_batch_one_and_single_token():
    one = Fn.bdc(torch.randn(1, 3, 1))
    assert one.shape == (1, 3, 3) and torch.isfinite(one).all()
    cov = Fn.covariance(torch.randn(1, 3, 1))
    assert torch.equal(cov, torch.zeros(1, 3, 3))

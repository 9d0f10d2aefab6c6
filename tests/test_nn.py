"""Tests of astro_spt.nn: attention, network, loss and Monte Carlo dropout."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from astro_spt.nn import (
    MahalanobisLoss,
    MCDropout,
    MultiHeadHSA,
    SpectralTransformer,
    SPTBlock,
    enhanced_softmax,
    mc_predict,
    model_precision,
)
from astro_spt.nn.mc import _draw_masks


def small_net(**kwargs):
    hparams = dict(n_inputs=12, n_outputs=2, d_model=32, n_heads=4, n_blocks=2, dropout=0.2)
    hparams.update(kwargs)
    torch.manual_seed(0)
    return SpectralTransformer(**hparams)


def trained_bn(net, n=64):
    """A network whose BatchNorm buffers hold non-trivial running statistics."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(n, net.hparams["n_inputs"]) * 3 + 1)
    return net.eval()


# --- enhanced_softmax ---------------------------------------------------------------


def test_enhanced_softmax_rows_sum_to_one():
    x = torch.rand(50, 64) * 64
    w = enhanced_softmax(x)
    assert torch.allclose(w.sum(-1), torch.ones(50), atol=1e-6)
    assert (w >= 0).all()


def test_enhanced_softmax_formula():
    x = torch.tensor([0.2, 0.7, 1.5], dtype=torch.float64)
    expected = torch.expm1(x) / torch.expm1(x).sum()
    assert torch.allclose(enhanced_softmax(x), expected, rtol=1e-12)
    # the rescaled branch (row max above 1) gives the same formula
    x = torch.tensor([3.0, 10.0, 40.0], dtype=torch.float64)
    assert torch.allclose(enhanced_softmax(x), torch.expm1(x) / torch.expm1(x).sum())


def test_enhanced_softmax_all_zero_row_is_uniform():
    x = torch.zeros(2, 8)
    x[1] = torch.rand(8)
    w = enhanced_softmax(x)
    assert torch.equal(w[0], torch.full((8,), 1 / 8))
    assert torch.isfinite(w).all()


def test_enhanced_softmax_half_precision_and_large_inputs():
    x = (torch.rand(16, 64) * 64).half()
    x[0] = 0
    w = enhanced_softmax(x)
    assert w.dtype == torch.float16
    assert torch.isfinite(w).all()
    assert torch.allclose(w.float().sum(-1), torch.ones(16), atol=1e-2)
    big = enhanced_softmax(torch.tensor([[1000.0, 999.0, 0.0]]))
    assert torch.isfinite(big).all()
    assert math.isclose(big[0, 0] / big[0, 1], math.e, rel_tol=1e-5)


def test_enhanced_softmax_gradient_is_finite():
    x = (torch.rand(4, 16) * 64).requires_grad_()
    enhanced_softmax(x)[:, 0].sum().backward()
    assert torch.isfinite(x.grad).all()


def test_enhanced_softmax_sharpens_where_softmax_flattens():
    # SPT paper Appendix A: for 0 < x2 < x1 <= 1 the ratio of enhanced_softmax
    # outputs exceeds x1/x2, the softmax's is below it.
    grid = torch.linspace(0.01, 1.0, 60, dtype=torch.float64)
    x1, x2 = torch.meshgrid(grid, grid, indexing="ij")
    keep = x2 < x1
    pairs = torch.stack([x1[keep], x2[keep]], dim=-1)
    ratio = pairs[:, 0] / pairs[:, 1]
    es = enhanced_softmax(pairs)
    sm = torch.softmax(pairs, dim=-1)
    assert (es[:, 0] / es[:, 1] > ratio).all()
    assert (sm[:, 0] / sm[:, 1] < ratio).all()


# --- attention, blocks, network -----------------------------------------------------


def test_hsa_matches_the_equations():
    torch.manual_seed(1)
    hsa = MultiHeadHSA(d_model=8, n_heads=2)
    x = torch.randn(3, 8)
    q, k, v = hsa.qkv(x).split(8, dim=-1)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        a = 4 * torch.softmax(q[:, sl], -1) * torch.softmax(k[:, sl], -1)
        w = torch.expm1(a) / torch.expm1(a).sum(-1, keepdim=True)
        heads.append(4 * w * v[:, sl])
    expected = hsa.out(torch.cat(heads, dim=-1))
    assert torch.allclose(hsa(x), expected, atol=1e-6)


def test_hsa_rejects_bad_head_count():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadHSA(d_model=10, n_heads=3)


def test_default_network_is_the_papers():
    net = SpectralTransformer()
    hp = net.hparams
    assert (hp["n_inputs"], hp["d_model"], hp["n_heads"], hp["n_blocks"]) == (143, 512, 8, 6)
    assert len(net.blocks) == 6
    assert net.blocks[0].attention.d_head == 64
    assert isinstance(net.blocks[0].norm1, torch.nn.BatchNorm1d)
    assert isinstance(net.blocks[0].ffn[1], torch.nn.GELU)
    assert net.count_parameters() == sum(p.numel() for p in net.parameters())


def test_truncated_normal_initialisation():
    net = SpectralTransformer(init_std=0.02)
    w = net.blocks[0].ffn[0].weight
    assert w.abs().max() <= 0.04 + 1e-7
    assert 0.012 < w.std() < 0.02
    assert torch.count_nonzero(net.embed.bias) == 0


def test_network_rejects_bad_input_and_arguments():
    net = small_net().eval()
    with pytest.raises(ValueError, match=r"shape \(n_spectra, 12\)"):
        net(torch.randn(3, 11))
    with pytest.raises(ValueError, match="dropout_position"):
        SpectralTransformer(dropout_position="middle")
    with pytest.raises(ValueError, match="dropout probability"):
        SpectralTransformer(dropout=1.0)


def test_block_residual_structure():
    block = SPTBlock(d_model=8, n_heads=2, d_ff=16).eval()
    x = torch.randn(4, 8)
    h = x + block.attention(block.norm1(x))
    expected = h + block.ffn(block.norm2(h))
    assert torch.allclose(block(x), expected, atol=1e-6)


@pytest.mark.parametrize("position", ["head", "all"])
def test_shared_split_equals_forward(position):
    net = trained_bn(small_net(dropout_position=position))
    x = torch.randn(5, 12)
    assert torch.equal(net.forward_stochastic(*net.forward_shared(x)), net(x))


def test_training_beats_the_mean_on_nonlinear_regression():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1200, 8, generator=gen)
    y = torch.stack([torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2], x[:, 3] ** 2 - x[:, 4]], 1)
    xtr, ytr, xte, yte = x[:1000], y[:1000], x[1000:], y[1000:]
    torch.manual_seed(0)
    net = SpectralTransformer(n_inputs=8, d_model=64, n_heads=4, n_blocks=2, dropout=0.05)
    loss_fn = MahalanobisLoss.from_labels(ytr)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for _ in range(400):
        idx = torch.randint(0, 1000, (100,), generator=gen)
        opt.zero_grad()
        loss_fn(net(xtr[idx]), ytr[idx]).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        mse = ((net(xte) - yte) ** 2).mean(0)
    mse_mean = ((ytr.mean(0) - yte) ** 2).mean(0)
    assert (mse < 0.3 * mse_mean).all(), (mse, mse_mean)


# --- MahalanobisLoss ----------------------------------------------------------------


def test_mahalanobis_loss_hand_computed():
    cov = [[2.0, 0.6], [0.6, 1.0]]
    pred = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    target = torch.zeros(2, 2)
    # inverse of cov = [[1, -0.6], [-0.6, 2]] / 1.64
    d1, d2 = 1.8 / 1.64, 4.2 / 1.64
    assert MahalanobisLoss(cov)(pred, target).item() == pytest.approx(
        (math.sqrt(d1) + math.sqrt(d2)) / 2, rel=1e-6
    )
    squared = MahalanobisLoss(cov, squared=True)(pred, target)
    assert squared.item() == pytest.approx((d1 + d2) / 2, rel=1e-6)
    per_sample = MahalanobisLoss(cov, reduction="none")(pred, target)
    assert per_sample.shape == (2,)


def test_mahalanobis_loss_finite_gradient_at_zero_error():
    loss_fn = MahalanobisLoss([[2.0, 0.6], [0.6, 1.0]])
    pred = torch.zeros(3, 2, requires_grad=True)
    loss_fn(pred, torch.zeros(3, 2)).backward()
    assert torch.isfinite(pred.grad).all()


def test_mahalanobis_loss_from_labels_and_errors():
    labels = np.random.default_rng(0).multivariate_normal([0, 0], [[4, 1], [1, 1]], 5000)
    loss_fn = MahalanobisLoss.from_labels(labels)
    assert torch.allclose(loss_fn.covariance, torch.tensor([[4.0, 1.0], [1.0, 1.0]]), atol=0.2)
    with pytest.raises(ValueError, match="positive definite"):
        MahalanobisLoss([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="square"):
        MahalanobisLoss([1.0, 2.0])
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(torch.zeros(2, 2), torch.zeros(2, 3))


# --- MC dropout ---------------------------------------------------------------------


def test_model_precision():
    assert model_precision(0.1, 2.0, 1000, 5e-4) == pytest.approx(0.1 * 4 / (2 * 1000 * 5e-4))
    with pytest.raises(ValueError):
        model_precision(0.0, 1.0, 10, 1e-4)


@pytest.mark.parametrize("position", ["head", "all"])
def test_mc_leaves_batchnorm_untouched(position):
    net = trained_bn(small_net(dropout_position=position))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()  # even a network left in training mode must not be updated
    mc_predict(net, torch.randn(16, 12), n_samples=10, seed=0)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.training  # the caller's mode is restored
    assert all(m.mask is None for m in net.modules() if isinstance(m, MCDropout))


def test_mc_is_reproducible_and_stochastic():
    net = trained_bn(small_net())
    x = torch.randn(8, 12)
    a = mc_predict(net, x, n_samples=30, seed=3, return_samples=True)
    b = mc_predict(net, x, n_samples=30, seed=3, return_samples=True)
    c = mc_predict(net, x, n_samples=30, seed=4, return_samples=True)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    assert (a.samples.std(dim=1) > 0).all()
    assert a.samples.shape == (8, 30, 2)
    fresh = mc_predict(net, x, n_samples=5)
    again = mc_predict(net, x, n_samples=5, seed=fresh.seed)
    assert torch.equal(fresh.mean, again.mean)


def test_mc_variance_floor_and_moments():
    net = trained_bn(small_net())
    x = torch.randn(6, 12)
    tau = 4.0
    pred = mc_predict(net, x, n_samples=50, tau=tau, seed=0, return_samples=True)
    variances = torch.diagonal(pred.covariance, dim1=-2, dim2=-1)
    assert (variances >= 1 / tau).all()
    s = pred.samples.double()
    second = torch.einsum("ntd,nte->nde", s, s) / 50
    m = s.mean(1)
    expected = torch.eye(2, dtype=torch.float64) / tau + second - torch.einsum("nd,ne->nde", m, m)
    assert torch.allclose(pred.covariance, expected, atol=1e-6)
    assert torch.allclose(pred.mean, pred.samples.mean(1))
    assert torch.allclose(pred.std**2, variances)


@pytest.mark.parametrize("position", ["head", "all"])
def test_mc_shared_prefix_equals_full_passes(position):
    net = trained_bn(small_net(dropout_position=position))
    x = torch.randn(4, 12)
    t = 7
    pred = mc_predict(net, x, n_samples=t, seed=11, return_samples=True)
    layers = net.stochastic_layers()
    # the T masks of the seed, the same for every spectrum: row i * t + j gets mask j
    masks = torch.from_numpy(_draw_masks(11, t, layers)).repeat(4, 1)
    start = 0
    for layer in layers:
        layer.mask = masks[:, start : start + layer.n_units]
        start += layer.n_units
    with torch.no_grad():
        full = net(x.repeat_interleave(t, dim=0)).view(4, t, -1)
    for layer in layers:
        layer.mask = None
    assert torch.allclose(pred.samples, full, atol=1e-5)


def test_mc_does_not_depend_on_batching():
    net = trained_bn(small_net())
    x = torch.randn(10, 12)
    whole = mc_predict(net, x, n_samples=20, seed=5)
    parts = [mc_predict(net, x[i : i + 3], n_samples=20, seed=5) for i in range(0, 10, 3)]
    reversed_ = mc_predict(net, x.flip(0), n_samples=20, seed=5)
    assert torch.allclose(torch.cat([p.mean for p in parts]), whole.mean, atol=1e-6)
    assert torch.allclose(reversed_.mean.flip(0), whole.mean, atol=1e-6)


def test_mc_masks_come_from_the_seed_alone_and_errors():
    net = trained_bn(small_net())
    x = torch.randn(2, 12)
    same = mc_predict(net, torch.stack([x[0], x[0]]), n_samples=10, seed=0)
    assert torch.equal(same.mean[0], same.mean[1])
    layers = net.stochastic_layers()
    masks = _draw_masks(3, 40, layers)
    assert masks.shape == (40, sum(layer.n_units for layer in layers))
    assert np.array_equal(masks, _draw_masks(3, 40, layers))
    assert not np.array_equal(masks, _draw_masks(4, 40, layers))
    # about p = 0.2 of the units dropped (2,000 draws: binomial sd 0.009)
    assert 0.16 < 1 - masks.mean() < 0.24
    scaled = _draw_masks(3, 40, layers, scaled=True)
    assert set(np.unique(scaled).tolist()) == {0.0, np.float32(1 / 0.8)}
    with pytest.raises(ValueError, match="n_samples"):
        mc_predict(net, x, n_samples=0)


def test_mc_passes_share_masks_across_spectra():
    # pass t of every spectrum is the same draw of the network (mask t of the seed), and a
    # spectrum's passes are those it gets alone
    net = trained_bn(small_net())
    x = torch.randn(5, 12)
    pred = mc_predict(net, x, n_samples=30, seed=2, return_samples=True)
    alone = [
        mc_predict(net, x[i : i + 1], n_samples=30, seed=2, return_samples=True) for i in range(5)
    ]
    for i, one in enumerate(alone):  # to rounding: BLAS takes other paths for one row
        assert torch.allclose(one.samples[0], pred.samples[i], atol=1e-6)
    layers = net.stochastic_layers()
    masks = torch.from_numpy(_draw_masks(2, 30, layers))
    start = 0
    for layer in layers:
        layer.mask = masks[:, start : start + layer.n_units].unsqueeze(0)
        start += layer.n_units
    try:
        with torch.no_grad():
            direct = net.forward_stochastic(*net.forward_shared(x), n_passes=30).view(5, 30, -1)
    finally:
        for layer in layers:
            layer.mask = None
    assert torch.allclose(direct, pred.samples, atol=1e-6)


def test_mc_without_dropout_gives_the_floor_only():
    net = trained_bn(small_net(dropout=0.0))
    pred = mc_predict(net, torch.randn(3, 12), n_samples=5, tau=2.0, seed=0)
    assert torch.allclose(pred.covariance, torch.eye(2, dtype=torch.float64).expand(3, 2, 2) / 2)


# --- import cost --------------------------------------------------------------------


def test_import_is_cheap():
    code = (
        "import sys, time; t = time.perf_counter(); import astro_spt; "
        "dt = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'matplotlib', 'specutils', 'sklearn', 'astropy.io.fits') "
        "if m in sys.modules]; "
        "print(dt, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dt, heavy = out.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(dt) < 2.0


def test_the_aleatoric_head_does_not_move_the_network():
    """Same seed, same network and same random stream after it, with or without the head."""
    import torch

    from astro_spt.nn import SpectralTransformer

    states, draws = [], []
    for hparams in ({}, {"aleatoric": True}, {"aleatoric": True, "scatter_noise": True}):
        torch.manual_seed(7)
        net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1, **hparams)
        states.append({k: v for k, v in net.state_dict().items() if "scatter" not in k})
        draws.append(torch.rand(3))
    for state, draw in zip(states[1:], draws[1:], strict=True):
        assert state.keys() == states[0].keys()
        assert all(torch.equal(state[k], states[0][k]) for k in state)
        assert torch.equal(draw, draws[0])

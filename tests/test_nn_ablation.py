"""Tests of the attention-activation switch used by the ablation benchmark."""

import pytest
import torch

from astro_spt.nn import MultiHeadHSA, SpectralTransformer, enhanced_softmax


def test_default_is_the_papers_enhanced_softmax():
    hsa = MultiHeadHSA(d_model=16, n_heads=4)
    assert hsa.activation == "enhanced_softmax"
    net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=4, n_blocks=1)
    assert net.hparams["attention_activation"] == "enhanced_softmax"


@pytest.mark.parametrize(
    ("activation", "weights"),
    [("enhanced_softmax", enhanced_softmax), ("softmax", torch.softmax)],
)
def test_activation_sets_the_attention_weights(activation, weights):
    torch.manual_seed(0)
    hsa = MultiHeadHSA(d_model=16, n_heads=4, activation=activation)
    x = torch.randn(5, 16)
    q, k, v = hsa.qkv(x).view(5, 3, 4, 4).unbind(dim=-3)
    scores = 4 * torch.softmax(q, -1) * torch.softmax(k, -1)
    expected = hsa.out((4 * weights(scores, dim=-1) * v).reshape(5, 16))
    torch.testing.assert_close(hsa(x), expected)


def test_softmax_and_enhanced_softmax_differ():
    torch.manual_seed(0)
    a = MultiHeadHSA(d_model=16, n_heads=4)
    b = MultiHeadHSA(d_model=16, n_heads=4, activation="softmax")
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 16)
    assert not torch.allclose(a(x), b(x))


def test_network_round_trips_the_activation():
    net = SpectralTransformer(
        n_inputs=8, d_model=16, n_heads=4, n_blocks=2, attention_activation="softmax"
    )
    assert all(block.attention.activation == "softmax" for block in net.blocks)
    rebuilt = SpectralTransformer(**net.hparams)
    assert rebuilt.hparams == net.hparams
    assert rebuilt.blocks[1].attention.activation == "softmax"


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        MultiHeadHSA(d_model=16, n_heads=4, activation="relu")
    with pytest.raises(ValueError, match="activation must be one of"):
        SpectralTransformer(n_inputs=8, d_model=16, n_heads=4, attention_activation="sigmoid")

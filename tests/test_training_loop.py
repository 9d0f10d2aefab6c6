"""Tests of the paper's training recipe: schedule, early stopping, weight averaging."""

import numpy as np
import pytest
import torch

from astro_spt.nn import SpectralTransformer
from astro_spt.training import (
    EarlyStopping,
    TrainingConfig,
    average_state_dicts,
    fit_network,
)


def tiny_problem(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.stack([np.sin(x[:, 0]) + x[:, 1], x[:, 2] * x[:, 3]], 1).astype(np.float32)
    return x[:100], y[:100], x[100:], y[100:]


def tiny_net(seed=0, **kwargs):
    torch.manual_seed(seed)
    return SpectralTransformer(n_inputs=6, d_model=16, n_heads=2, n_blocks=1, dropout=0.1, **kwargs)


def test_learning_rate_schedule_is_the_papers():
    config = TrainingConfig()
    assert (config.learning_rate, config.lr_decay, config.lr_step_epochs) == (1e-4, 0.8, 100)
    assert config.weight_decay == 5e-4 and config.betas == (0.9, 0.999)
    assert config.learning_rate_at(0) == 1e-4
    assert config.learning_rate_at(199) == pytest.approx(1e-4 * 0.8)
    assert config.learning_rate_at(250) == pytest.approx(1e-4 * 0.64)


def test_fit_follows_the_schedule():
    x, y, xv, yv = tiny_problem()
    config = TrainingConfig(max_epochs=7, lr_step_epochs=3, patience=100, learning_rate=1e-3)
    history = fit_network(tiny_net(), x, y, xv, yv, config)
    expected = [config.learning_rate_at(e) for e in range(7)]
    assert history.learning_rate == pytest.approx(expected)


def test_early_stopping_rule():
    stopper = EarlyStopping(patience=3)
    losses = [5, 4, 4.5, 4.2, 3.9, 4.0, 4.0, 4.0, 1.0]
    decisions = [stopper.update(v) for v in losses]
    assert decisions == [False] * 7 + [True, False]
    assert stopper.best_epoch == 8
    strict = EarlyStopping(patience=1, min_delta=0.5)
    assert [strict.update(v) for v in [2.0, 1.8]] == [False, True]


def test_final_weights_are_the_average_of_the_last_epochs():
    x, y, xv, yv = tiny_problem()
    stored = []

    def keep(epoch, net, history):
        stored.append({k: v.clone() for k, v in net.state_dict().items()})

    config = TrainingConfig(max_epochs=6, patience=4, learning_rate=1e-3)
    net = tiny_net()
    history = fit_network(net, x, y, xv, yv, config, callback=keep)
    assert history.averaged_epochs == list(range(history.n_epochs - 4, history.n_epochs))
    final = net.state_dict()
    for key, value in final.items():
        if torch.is_floating_point(value):
            expected = torch.stack([s[key] for s in stored[-4:]]).double().mean(0).float()
            assert torch.allclose(value, expected, atol=1e-7), key
        else:
            assert torch.equal(value, stored[-1][key])


def test_training_stops_early_when_validation_stalls():
    x, y, xv, yv = tiny_problem()
    config = TrainingConfig(max_epochs=200, patience=2, learning_rate=0.0, weight_decay=0.0)
    # a zero learning rate and frozen BatchNorm statistics: the validation loss never
    # improves after epoch 0
    history = fit_network(tiny_net(bn_momentum=0.0), x, y, xv, yv, config)
    assert history.stopped_early
    assert history.n_epochs == 3
    assert history.best_epoch == 0


def test_same_seed_gives_identical_weights():
    x, y, xv, yv = tiny_problem()
    config = TrainingConfig(max_epochs=3, learning_rate=1e-3, seed=7)
    a, b, c = tiny_net(1), tiny_net(1), tiny_net(1)
    fit_network(a, x, y, xv, yv, config)
    fit_network(b, x, y, xv, yv, config)
    fit_network(c, x, y, xv, yv, TrainingConfig(max_epochs=3, learning_rate=1e-3, seed=8))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_config_round_trip_and_errors():
    config = TrainingConfig(batch_size=32, loss="mse")
    assert TrainingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        TrainingConfig.from_dict({"learning_rat": 1.0})
    with pytest.raises(ValueError, match="loss"):
        TrainingConfig(loss="huber")
    with pytest.raises(ValueError, match="no state"):
        average_state_dicts([])

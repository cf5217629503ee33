"""Ensemble: the average of its members' simulations; clear errors for members that cannot be averaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_stepper

from deepwiener.errors import ConfigError, DataError
from deepwiener.identification import LinearStateSpace
from deepwiener.models import DeepWiener, Ensemble, LFRModel, LinearModel


def deep(seed: int, n_u: int = 2, dt: float = 0.01) -> DeepWiener:
    model = DeepWiener(n_u=n_u, n_y=1, layer="lru", d_model=4, d_state=4, n_layers=2, seed=seed)
    model.with_dt(dt)
    model.set_scaler(np.zeros(n_u), np.ones(n_u), [0.3], [2.0])
    return model


def linear(dt: float = 0.01) -> LinearModel:
    return LinearModel.from_state_space(LinearStateSpace(
        A=[[0.9, 0.1], [0.0, 0.5]], B=[[1.0, 0.0], [0.0, 1.0]], C=[[1.0, -1.0]], D=[[0.0, 0.2]], dt=dt,
        u_mean=[0.0, 0.0], u_std=[1.0, 1.0], y_mean=[0.1], y_std=[3.0]))


def test_simulate_is_the_mean_of_the_members() -> None:
    members = [deep(0), deep(1), linear()]
    u = np.random.default_rng(0).normal(size=(200, 2))
    y = Ensemble(members).simulate(u)
    expected = (members[0].simulate(u) + members[1].simulate(u) + members[2].simulate(u)) / 3
    assert y.shape == (200, 1)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)
    assert np.abs(members[0].simulate(u) - members[1].simulate(u)).max() > 1e-3  # the members differ


def test_error_is_at_most_the_members_mean_error() -> None:
    """The norm is convex: the ensemble's RMSE never exceeds the mean of its members' RMSEs."""
    u = np.random.default_rng(1).normal(size=(300, 2))
    y = np.sin(np.arange(300) / 7.0)[:, None]
    members = [deep(seed) for seed in range(4)]
    errors = [np.sqrt(np.mean((y - m.simulate(u)) ** 2)) for m in members]
    ensemble_error = np.sqrt(np.mean((y - Ensemble(members).simulate(u)) ** 2))
    assert ensemble_error <= np.mean(errors) + 1e-12
    assert ensemble_error < max(errors)


def test_sizes_dt_and_parameters() -> None:
    ensemble = Ensemble([deep(0), linear()])
    assert (ensemble.n_u, ensemble.n_y, ensemble.dt) == (2, 1, 0.01)
    assert ensemble.n_parameters == deep(0).n_parameters + 4 + 4 + 2 + 2


@pytest.mark.parametrize(("members", "message"), [
    ([], "at least two models, got 0"),
    ([deep(0)], "at least two models, got 1"),
    ([deep(0), deep(1, n_u=1)], r"disagree on \(n_u, n_y\): \[\(2, 1\), \(1, 1\)\]"),
    ([deep(0), linear(dt=0.02)], "disagree on the sampling time"),
    ([deep(0), "model.dw"], "member 1 is of type str"),
    ([deep(0), Ensemble([deep(1), deep(2)])], "member 1 is of type Ensemble"),
])
def test_bad_members_are_refused(members: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Ensemble(members)


def test_wrong_input_shape_is_refused() -> None:
    with pytest.raises(DataError, match=r"u must have shape \(time, n_u=2\)"):
        Ensemble([deep(0), deep(1)]).simulate(np.zeros((10, 3)))


def test_streaming_agrees_with_simulate() -> None:
    ensemble = Ensemble([deep(0), deep(1), deep(2)])
    u = np.random.default_rng(2).normal(size=(120, 2))
    expected = ensemble.simulate(u)
    streamer = ensemble.fast_stepper()
    first = np.stack([streamer.step(u_k) for u_k in u[:50]])
    middle = streamer.state
    rest = streamer.run(u[50:])
    np.testing.assert_allclose(np.concatenate([first, rest]), expected, rtol=0, atol=1e-5)  # float32 members
    streamer.reset(middle)  # resume from the saved state of every member
    np.testing.assert_allclose(streamer.run(u[50:]), rest, rtol=0, atol=1e-12)
    streamer.reset()
    np.testing.assert_allclose(streamer.run(u[:50]), first, rtol=0, atol=1e-12)
    with pytest.raises(DataError, match=r"one state per member \(3\), got 2"):
        streamer.reset(middle[:2])


def test_members_of_every_kind_stream_and_step() -> None:
    lfr = LFRModel(2, 1, n_x=3, n_w=2, seed=4)
    lfr.with_dt(0.01)
    ensemble = Ensemble([deep(0), linear(), lfr])
    u = np.random.default_rng(3).normal(size=(60, 2))
    expected = ensemble.simulate(u)
    np.testing.assert_allclose(ensemble.fast_stepper().run(u), expected, rtol=0, atol=1e-5)  # float32 members
    stepper = ensemble.stepper()
    with torch.no_grad():
        y_step, _ = run_stepper(stepper, torch.tensor(u)[None], stepper.init_state(1))
        y_forward, states = ensemble(torch.tensor(u)[None])
    np.testing.assert_allclose(y_step[0].numpy(), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(y_forward[0].numpy(), expected, rtol=0, atol=1e-5)
    assert len(states) == 3  # one state per member

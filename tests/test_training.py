"""fit(): determinism, resume, held-out validation, stopping rules and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepwiener.data import IOData
from deepwiener.errors import ConfigError, DataError
from deepwiener.models import DeepWiener
from deepwiener.training import TrainConfig, fit, loss_weights, parameter_groups


def wiener_data(n: int = 1200, seed: int = 0, dt: float = 0.01) -> IOData:
    """A small simulated Wiener system: first-order filter -> tanh."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    x = np.zeros(n)
    for k in range(1, n):
        x[k] = 0.9 * x[k - 1] + 0.3 * u[k - 1]
    return IOData(u=u, y=np.tanh(x), dt=dt, name=f"wiener{seed}")


def small_model(seed: int = 0) -> DeepWiener:
    return DeepWiener(1, 1, d_model=4, d_state=4, n_layers=1, seed=seed)


CONFIG = TrainConfig(window=100, washout=10, batch_size=8, epochs=3, lr=1e-2, patience=None)


def test_same_seed_same_parameters_bitwise() -> None:
    data = wiener_data()
    models = [small_model(), small_model()]
    for m in models:
        fit(m, data, CONFIG)
    for pa, pb in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(pa, pb)
    other = small_model()
    fit(other, data, TrainConfig(**{**CONFIG.to_dict(), "seed": 1}))
    assert any(not torch.equal(pa, pb) for pa, pb in zip(models[0].parameters(), other.parameters(), strict=True))


def test_training_lowers_validation_error_and_sets_scaler_and_dt() -> None:
    data = wiener_data()
    model = small_model()
    result = fit(model, data, TrainConfig(window=100, washout=10, batch_size=8, epochs=20, lr=5e-2, patience=None))
    assert result.history[-1]["val_rmse"] < 0.5 * result.history[0]["val_rmse"]
    assert model.dt == 0.01
    train_part = data[: int(round(0.8 * len(data)))]
    assert float(model.y_mean) == pytest.approx(train_part.y.mean(), rel=1e-5)
    assert result.best_val_rmse == min(h["val_rmse"] for h in result.history)


def test_resume_after_interruption_equals_uninterrupted(tmp_path) -> None:
    data = wiener_data()
    full = small_model()
    fit(full, data, TrainConfig(**{**CONFIG.to_dict(), "epochs": 4}))

    class Stop(Exception):
        pass

    def interrupt(info) -> None:
        if info.epoch == 2:  # after the second epoch
            raise Stop

    ckpt = tmp_path / "checkpoint.pt"
    resumed = small_model()
    with pytest.raises(Stop):
        fit(resumed, data, TrainConfig(**{**CONFIG.to_dict(), "epochs": 4}), checkpoint=ckpt, on_epoch=interrupt)
    assert ckpt.exists()
    resumed = small_model()
    result = fit(resumed, data, TrainConfig(**{**CONFIG.to_dict(), "epochs": 4}), checkpoint=ckpt)
    assert not ckpt.exists()
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for pa, pb in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_early_stopping_and_best_checkpoint_restored() -> None:
    data = wiener_data()
    model = small_model()
    seen = []
    result = fit(model, data, TrainConfig(window=100, washout=10, batch_size=8, epochs=200, lr=0.5, patience=2),
                 on_epoch=lambda info: seen.append(info))
    assert result.stopped == "early stopping"
    assert result.epochs_run < 200
    start = int(round(0.8 * len(data)))
    y_hat = model.simulate(data.u)
    rmse_tail = float(np.sqrt(np.mean((data.y[start:] - y_hat[start:]) ** 2)))
    assert rmse_tail == pytest.approx(result.best_val_rmse, rel=1e-6)


def test_time_budget_stops_training() -> None:
    result = fit(small_model(), wiener_data(), TrainConfig(window=100, washout=10, epochs=100000, max_minutes=0.02))
    assert result.stopped == "time budget"


def test_explicit_validation_records_are_used() -> None:
    train, val = wiener_data(seed=0), wiener_data(seed=1)
    result = fit(small_model(), train, CONFIG, val=[val])
    assert len(result.history) == 3


def test_parameter_groups_split_ssm_parameters() -> None:
    model = small_model()
    groups = parameter_groups(model, TrainConfig(lr=1e-3, ssm_lr=1e-4, weight_decay=0.1))
    ssm = {id(p) for p in model.blocks[0].lti.parameters()}
    assert {id(p) for p in groups[0]["params"]} == ssm
    assert groups[0]["lr"] == 1e-4 and groups[0]["weight_decay"] == 0.0
    assert groups[1]["lr"] == 1e-3 and groups[1]["weight_decay"] == 0.1


@pytest.mark.parametrize(
    ("options", "match"),
    [({"window": 0}, "window"), ({"washout": 600}, "washout"), ({"schedule": "cosin"}, "cosine"),
     ({"mode": "fastest"}, "mode"), ({"val_fraction": 1.0}, "val_fraction"), ({"lr": -1.0}, "lr")],
)
def test_bad_training_options(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**options)
    with pytest.raises(ConfigError, match="epohcs"):
        TrainConfig.from_dict({"epohcs": 3})


def test_bad_training_data() -> None:
    model = small_model()
    with pytest.raises(DataError, match="window"):
        fit(model, wiener_data(n=150), TrainConfig(window=512, washout=10))
    with pytest.raises(DataError, match="dt"):
        fit(model, [wiener_data(dt=0.01), wiener_data(seed=1, dt=0.02)], CONFIG)
    two_inputs = IOData(u=np.zeros((500, 2)), y=np.zeros(500), dt=0.01)
    with pytest.raises(DataError, match="n_u"):
        fit(model, two_inputs, CONFIG)


def test_divergence_is_reported() -> None:
    data = wiener_data()
    model = small_model()
    with torch.no_grad():
        model.decoder.weight.fill_(float("nan"))
    with pytest.raises(DataError, match="diverged"):
        fit(model, data, CONFIG)


def _blow_up_in_training(model: DeepWiener, calls: set[int]) -> list[int]:
    """Make the model's training-mode output NaN on the given forward calls (0-based); returns the call log."""
    log: list[int] = []

    def hook(module: torch.nn.Module, args: object, output: tuple[torch.Tensor, ...]) -> object:
        if not module.training:
            return None
        log.append(len(log))
        return (output[0] * float("nan"), *output[1:]) if log[-1] in calls else None

    model.register_forward_hook(hook)
    return log


def test_a_blown_up_epoch_restarts_with_half_the_learning_rate(caplog) -> None:
    data = wiener_data()
    clean, recovered = small_model(), small_model()
    config = TrainConfig(**{**CONFIG.to_dict(), "schedule": "constant", "val_fraction": 0.2})
    fit(clean, data, config)
    log = _blow_up_in_training(recovered, {4})  # 3 batches per epoch here: the second batch of epoch 2
    with caplog.at_level("WARNING", logger="deepwiener.training"):
        result = fit(recovered, data, config)
    assert "in epoch 2: the epoch restarts with the learning rate halved (1 of 3" in caplog.text
    assert [h["lr"] for h in result.history] == [config.lr, config.lr / 2, config.lr / 2]
    assert result.epochs_run == config.epochs and len(log) == 3 + 2 + 3 + 3  # epoch 2 ran twice, the first time
    # up to its blown-up batch
    assert all(torch.isfinite(p).all() for p in recovered.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(clean.parameters(), recovered.parameters(), strict=True))


def test_recoveries_are_limited() -> None:
    data = wiener_data()
    model = small_model()
    _blow_up_in_training(model, set(range(10_000)))  # every training step blows up
    with pytest.raises(DataError, match="after 2 recoveries"):
        fit(model, data, TrainConfig(**{**CONFIG.to_dict(), "divergence_retries": 2}))
    fresh = small_model()
    _blow_up_in_training(fresh, {0})
    with pytest.raises(DataError, match="after 0 recoveries"):
        fit(fresh, data, TrainConfig(**{**CONFIG.to_dict(), "divergence_retries": 0}))


def test_decaying_loss_weights_follow_the_authors_rule() -> None:
    weights = loss_weights(4, 0.5, torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64) / 3.75)
    assert float(loss_weights(512, 0.9975, torch.zeros(1))[-1] / loss_weights(512, 0.9975, torch.zeros(1))[0]) == \
        pytest.approx(0.9975**511, rel=1e-5)
    with pytest.raises(ConfigError, match="loss_decay must be in \\(0, 1\\]"):
        TrainConfig(loss_decay=1.5)


def test_a_decaying_loss_trains_another_model_than_the_plain_one() -> None:
    data = wiener_data()
    plain, decayed = small_model(), small_model()
    fit(plain, data, CONFIG)
    fit(decayed, data, TrainConfig(**{**CONFIG.to_dict(), "loss_decay": 0.99}))
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), decayed.parameters(), strict=True))

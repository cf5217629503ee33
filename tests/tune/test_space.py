"""The search space: ranges of every type, kind-specific tables, and the refusals."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from deepwiener.config import resolve
from deepwiener.errors import ConfigError
from deepwiener.tune import Range, read_space

SPACE = """
[data]
benchmark = "cascaded_tanks"
[train]
epochs = 5
[tune]
pruner = "none"
[tune.train]
lr = { low = 1e-4, high = 1e-2, log = true }
batch_size = { choices = [8, 16] }
[tune.model]
kind = { choices = ["deepwiener", "lfr", "gru"] }
[tune.deepwiener.model]
d_model = { low = 4, high = 12, step = 4 }
layer = { choices = ["lru", "s5"] }
[tune.deepwiener.train]
weight_decay = { low = 0, high = 0.1 }
[tune.lfr.model]
n_x = { low = 2, high = 6 }
n_w = 8
"""


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def test_each_kind_gets_its_own_ranges_and_every_sample_resolves(tmp_path: Path) -> None:
    space = read_space(space_file(tmp_path, SPACE))
    assert space.pruner == "none" and set(space.kinds) == {"deepwiener", "lfr"}
    space.check({})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(30):
        trial = study.ask()
        tables = space.sample(trial)
        cfg = resolve(tables)
        kind = cfg.kind
        seen[kind] = trial.params
        assert 1e-4 <= cfg.train.lr <= 1e-2 and cfg.train.batch_size in (8, 16)
        if kind == "deepwiener":
            assert cfg.model["d_model"] in (4, 8, 12) and cfg.model["layer"] in ("lru", "s5")
            assert isinstance(trial.params["deepwiener.train.weight_decay"], float)
        if kind == "lfr":
            assert 2 <= cfg.model["n_x"] <= 6 and cfg.model["n_w"] == 8
        study.tell(trial, 1.0)
    assert set(seen) == {"deepwiener", "lfr", "gru"}
    assert not any(name.startswith(("deepwiener.", "lfr.")) for name in seen["gru"])  # only the chosen kind's


@pytest.mark.parametrize(("text", "message"), [
    ("[tune.train]\nlr = { low = 1e-2, high = 1e-4 }\n", "need low <= high"),
    ("[tune.train]\nlr = { low = 0.0, high = 1e-2, log = true }\n", "low > 0 on a log scale"),
    ("[tune.train]\nlr = { lo = 1e-4, high = 1e-2 }\n", "a range is"),
    ("[tune.train]\nbatch_size = { choices = [] }\n", "non-empty list"),
    ("[tune.train]\nval_fraction = { low = 0.1, high = 0.3 }\n", "never searched"),
    ("[tune.data]\nbenchmark = { choices = [\"silverbox\"] }\n", "the data is never searched"),
    ("[tune.nosuch]\nx = 1\n", "unknown [tune] entry 'nosuch'"),
    ("[tune]\npruner = \"sometimes\"\n", "unknown [tune] pruner"),
    ("[model]\nd_model = 4\n", "no [tune] table"),
])
def test_bad_spaces_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        read_space(space_file(tmp_path, text))


def test_check_names_the_kind_whose_configuration_is_invalid(tmp_path: Path) -> None:
    text = "[tune.model]\nkind = { choices = [\"deepwiener\", \"gru\"] }\n[tune.gru.model]\nd_model = 4\n"
    with pytest.raises(ConfigError, match="kind 'gru' is invalid.*d_model"):
        read_space(space_file(tmp_path, text)).check({"data": {"benchmark": "cascaded_tanks"}})


def test_integer_and_float_ranges() -> None:
    assert Range.parse("a", {"low": 1, "high": 4}).integer
    assert not Range.parse("a", {"low": 1, "high": 4.0}).integer
    assert Range.parse("a", {"choices": ["x", 2]}).first() == "x"

"""The shared argument predicates of ``deepwiener.errors``."""

from __future__ import annotations

import numpy as np
import pytest

from deepwiener.errors import ConfigError, check_positive_ints, is_integer_in, unknown_name


@pytest.mark.parametrize("value", [0, 3, 5, np.int64(4), np.int32(0)])
def test_integers_in_range_pass(value: object) -> None:
    assert is_integer_in(value, 0, 5)


@pytest.mark.parametrize("value", [-1, 6, True, False, 2.0, np.float64(2.0), "2", None, np.array(2)])
def test_everything_else_fails(value: object) -> None:
    assert not is_integer_in(value, 0, 5)


def test_no_upper_bound_by_default() -> None:
    assert is_integer_in(10**12, 1)
    assert not is_integer_in(0, 1)


def test_unknown_name_lists_the_valid_names_and_a_close_match() -> None:
    message = str(unknown_name("layer", "lur", ["s5", "lru", "s4"]))
    assert "expected one of: lru, s4, s5" in message
    assert "did you mean 'lru'?" in message


def test_check_positive_ints_names_the_first_bad_value() -> None:
    check_positive_ints(a=1, b=np.int64(7))
    for bad in (0, -2, True, 1.0, None):
        with pytest.raises(ConfigError, match=rf"^b must be a positive integer, got {bad!r}$"):
            check_positive_ints(a=3, b=bad, c=0)

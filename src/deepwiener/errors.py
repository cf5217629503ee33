"""Exception hierarchy: every error the library raises on purpose is a ``DeepWienerError``.

The command line turns a ``DeepWienerError`` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

import numpy as np


class DeepWienerError(Exception):
    """Base class of all deliberate deepwiener errors."""


class ConfigError(DeepWienerError, ValueError):
    """A bad argument, option or configuration value."""


class DataError(DeepWienerError, ValueError):
    """Bad input data: NaN/inf, wrong shape, wrong length, missing column, checksum mismatch, ..."""


class ModelFileError(DeepWienerError):
    """A model or run file that cannot be read (corrupt, truncated, foreign, wrong version)."""


class WriteError(DeepWienerError, OSError):
    """A file that cannot be written (disk full, read-only file system, no permission, ...); names the path."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) while a command runs: raised by the command line's signal handler in place of
    ``KeyboardInterrupt``, so that it reaches the error boundary and runs know they were interrupted."""


def unknown_name(kind: str, name: object, valid: Iterable[str]) -> ConfigError:
    """Build a ConfigError for an unknown name, listing the valid ones and a close match.

    Args:
        kind: what was named, e.g. ``"layer"``.
        name: the name given.
        valid: the accepted names.
    """
    valid = sorted(valid)
    msg = f"unknown {kind} {name!r}; expected one of: {', '.join(valid)}"
    close = difflib.get_close_matches(str(name), valid, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    return ConfigError(msg)


def is_integer_in(value: object, low: int, high: float = math.inf) -> bool:
    """Whether ``value`` is an integer (Python or NumPy; not a bool) with ``low <= value <= high``."""
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and low <= value <= high


def check_positive_ints(**values: object) -> None:
    """Raise ConfigError unless every value is a positive integer (not a bool); the message names the first bad one."""
    for name, value in values.items():
        if not is_integer_in(value, 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")

"""Writing files so that nothing is ever half-written: :func:`write_file`, and a log handler that cannot crash a run.

:class:`LockFile` is an exclusive lock on a folder held for a process's lifetime (run directories use it).

``write_file(path, data)`` writes the whole content at once:

- a regular file (or a new one) is written to a temporary file beside it, flushed to disk and moved over it with
  ``os.replace``, so a reader sees the old file or the complete new one, never a part; the new file keeps the
  permissions of the file it replaces;
- a symbolic link is followed: the file it points at is replaced (beside it), and the link stays a link;
- a character device, a pipe or a socket (``/dev/stdout``, a named pipe) is written directly, and ``-`` means
  standard output: there is nothing to replace atomically, and a temporary file beside ``/dev/stdout`` would be
  wrong;
- a directory is refused (``ConfigError``), and any operating-system error (disk full, read-only file system,
  permission denied, ...) becomes a :class:`~deepwiener.errors.WriteError` that names the path and the cause, after
  the temporary file is removed.

This module depends only on ``errors``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import stat
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from deepwiener.errors import ConfigError, WriteError

STDOUT = "-"
"""The path that means standard output."""


def write_file(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` completely or not at all (module docstring).

    Args:
        path: the destination; parent folders are created; ``-`` writes to standard output.
        data: the whole content.

    Returns:
        ``path`` as given (a ``Path``).

    Raises:
        ConfigError: ``path`` is a directory.
        WriteError: the operating system refused the write (the message names the path and why).
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if str(path) == STDOUT:
        binary = getattr(sys.stdout, "buffer", None)  # None when stdout is a text stream (redirected in a program)
        sys.stdout.flush()
        if binary is None:
            sys.stdout.write(payload.decode("utf-8"))
        else:
            binary.write(payload)
            binary.flush()
        return Path(path)
    path = Path(path)
    target = Path(os.path.realpath(path))  # through symbolic links, also dangling ones
    if target.is_dir():
        raise ConfigError(f"{path} is a directory; give a file name")
    try:
        if target.exists() and not target.is_file():  # a device, pipe or socket: written in place
            with target.open("wb") as stream:
                stream.write(payload)
            return path
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace(target, payload)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def _replace(target: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``target`` and move it over ``target``; remove it on failure."""
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else None
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class SafeFileHandler(logging.FileHandler):
    """A log file that stops quietly when it cannot be written (a full disk), instead of printing a traceback
    for every record; ``failed`` says whether that happened."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.failed = True


class LockFile:
    """An exclusive lock: a file holding the holder's pid, host and start time, locked (``flock``) while held.

    The operating system drops the ``flock`` when the holding process ends in any way (exit, crash, SIGKILL), so
    a lock file whose holder is gone is stale and is taken over; one whose holder lives refuses everyone else.

    Args:
        path: the lock file, e.g. ``runs/x/run.lock``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, what: str) -> None:
        """Take the lock, or say who holds it.

        Args:
            what: how messages name the locked thing, e.g. "run runs/x".

        Raises:
            ConfigError: a live process holds the lock (its pid, host and start time are named).
            WriteError: the lock file cannot be created.
        """
        for _ in range(3):  # the file may be replaced between opening and locking it: try again, boundedly
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise WriteError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise ConfigError(f"{what} is in use by process {holder.get('pid', '?')} on "
                                  f"{holder.get('host', '?')} (since {holder.get('since', '?')}); wait for it to "
                                  "finish or stop it (--force does not take a run from a live process)") from None
            if self._same_file(fd):
                info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(info).encode())
                self._fd = fd
                return
            os.close(fd)
        raise ConfigError(f"{what}: could not take the lock {self.path} (it kept being replaced)")

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def _same_file(self, fd: int) -> bool:
        """Whether the locked descriptor is still the file at ``path`` (not one a releasing holder removed)."""
        try:
            return os.fstat(fd).st_ino == self.path.stat().st_ino
        except FileNotFoundError:
            return False


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder's information in a lock file ({} when unreadable)."""
    try:
        content = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}

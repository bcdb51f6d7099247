"""Temporary files and folders that end up as results others can read.

:func:`tempfile.mkstemp` creates files readable only by their owner (``0o600``) and
:func:`tempfile.mkdtemp` folders only their owner can enter (``0o700``). A file written under a
temporary name and then moved into place with :func:`os.replace` keeps that mode, so results
would not follow the user's umask. :func:`mkstemp` and :func:`mkdtemp` here do the same job but
ask the system for ``0o666`` / ``0o777``, which the kernel reduces by the umask at creation time
(and default ACLs apply as for any new file): under the common umask ``0o022`` files are
``0o644`` and folders ``0o755``. Nothing reads or changes the process-wide umask, so there is no
race with other threads.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

__all__ = ["fsync", "mkdtemp", "mkstemp", "os_reason"]

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_FLAGS |= getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100


def _candidates(folder: str | os.PathLike[str], prefix: str, suffix: str):
    for _ in range(_ATTEMPTS):
        yield os.path.join(os.fspath(folder), f"{prefix}{secrets.token_hex(4)}{suffix}")


def mkstemp(folder: str | os.PathLike[str], prefix: str = ".tmp-", suffix: str = "") -> tuple[int, str]:
    """Create a new file with a unique name in ``folder``, with mode ``0o666`` less the umask.

    Like :func:`tempfile.mkstemp` (which gives ``0o600``): the caller owns the open descriptor and
    the file, and removes or renames it.

    Returns:
        The open descriptor (read-write) and the file's path.
    """
    for name in _candidates(folder, prefix, suffix):
        try:
            return os.open(name, _FLAGS, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {os.fspath(folder)} after {_ATTEMPTS} tries")


def mkdtemp(folder: str | os.PathLike[str], prefix: str = ".tmp-", suffix: str = "") -> Path:
    """Create a new folder with a unique name in ``folder``, with mode ``0o777`` less the umask.

    Like :func:`tempfile.mkdtemp` (which gives ``0o700``); the caller removes or renames it.
    """
    for name in _candidates(folder, prefix, suffix):
        try:
            os.mkdir(name, 0o777)
            return Path(name)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {os.fspath(folder)} after {_ATTEMPTS} tries")


_PLAIN = {errno.ENOSPC: "no space left on device", errno.EACCES: "permission denied",
          errno.EPERM: "permission denied", errno.EROFS: "the file system is read-only",
          errno.ENOENT: "a folder on the path does not exist", errno.ENOTDIR: "a part of the path is a file",
          errno.EISDIR: "it is a folder"}
if hasattr(errno, "EDQUOT"):
    _PLAIN[errno.EDQUOT] = "the disk quota is exhausted"


def os_reason(exc: OSError, code: bool = False) -> str:
    """A short, plain reason for an operating-system error: ``"no space left on device"``, with
    ``code`` also its symbol (``"no space left on device (ENOSPC)"``)."""
    text = _PLAIN.get(exc.errno) or (exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or str(exc))
    text = text.strip().rstrip(".")
    text = text[:1].lower() + text[1:] if text else "an operating-system error"
    symbol = errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
    return f"{text} ({symbol})" if code and symbol else text


def fsync(path: str | os.PathLike[str], directory: bool = False, strict: bool = False) -> None:
    """Flush a file (or, with ``directory``, a folder's entries) to disk where the system allows it.

    With ``strict``, a file that cannot be flushed raises (its data may not be on disk); a folder
    that cannot be opened for flushing (Windows) is never an error.
    """
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if directory else (os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags)
    except OSError:
        if strict and not directory:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict and not directory:
            raise
    finally:
        os.close(fd)

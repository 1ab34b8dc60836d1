"""Linux inotify through ctypes: the agent learns that a console file grew without polling it.

An idle agent then costs nothing per app; an app that prints wakes it at once. Where inotify is
not available, `Inotify.open` returns None and the caller polls instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from pathlib import Path

IN_MODIFY = 0x00000002
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            return None
        _libc = ctypes.CDLL(name, use_errno=True)
    return _libc


class Inotify:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, paths: list[Path]) -> Inotify | None:
        libc = _lib()
        if libc is None or not hasattr(libc, "inotify_init1"):
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return None
        for path in paths:
            if libc.inotify_add_watch(fd, os.fsencode(path), IN_MODIFY) < 0:
                os.close(fd)
                return None
        return cls(fd)

    def drain(self) -> None:
        """Consume pending events (only the fact that something changed matters)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.fd, 65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

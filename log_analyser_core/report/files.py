"""Files written whole or not at all: beside their target, then renamed into place (reports,
blocklists, live mode's rewrites and checkpoints)."""
from __future__ import annotations

import contextlib
import os
import queue
import stat
import tempfile
import threading
from collections.abc import Iterable
from typing import Protocol


def replace_atomically(path: str, pieces: Iterable[bytes]) -> None:
    """``pieces`` into a temporary file in ``path``'s folder, then renamed over ``path``; devices and
    FIFOs (/dev/stdout) are written in place. Raises OSError, leaving no temporary file behind."""
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        with open(path, "wb") as device:
            write_behind(device, pieces)
        return
    folder = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                         delete=False)
    try:
        with handle:
            write_behind(handle, pieces)
            handle.flush()
            os.fsync(handle.fileno())
        # the mode a plain open() would have given (or the old report's): mkstemp makes files 0600
        os.chmod(handle.name, stat.S_IMODE(existing.st_mode) if existing else 0o666 & ~_umask())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def write_behind(handle: _Writable, pieces: Iterable[bytes]) -> None:
    """``pieces`` written to ``handle`` in order, each on a thread while the next one is made: a
    report of a million clients is over a gigabyte, and its writing (a system call that releases
    the GIL) then costs no time of its own. The first error, of either side, is raised."""
    ahead: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
    failed: list[BaseException] = []

    def drain() -> None:
        try:
            while (piece := ahead.get()) is not None:
                handle.write(piece)
        except BaseException as exc:   # noqa: BLE001 - raised again by the caller's thread
            failed.append(exc)
            while ahead.get() is not None:   # the maker never waits on a writer that stopped
                pass

    writer = threading.Thread(target=drain, name="report-writer", daemon=True)
    writer.start()
    try:
        for piece in pieces:
            if failed:
                break
            ahead.put(piece)
    finally:
        ahead.put(None)
        writer.join()
    if failed:
        raise failed[0]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

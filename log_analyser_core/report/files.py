"""Files written whole or not at all: beside their target, then renamed into place (reports,
blocklists, live mode's rewrites and checkpoints)."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable


def replace_atomically(path: str, pieces: Iterable[bytes]) -> None:
    """``pieces`` into a temporary file in ``path``'s folder, then renamed over ``path``; devices and
    FIFOs (/dev/stdout) are written in place. Raises OSError, leaving no temporary file behind."""
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        with open(path, "wb") as device:
            device.writelines(pieces)
        return
    folder = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                         delete=False)
    try:
        with handle:
            handle.writelines(pieces)
            handle.flush()
            os.fsync(handle.fileno())
        # the mode a plain open() would have given (or the old report's): mkstemp makes files 0600
        os.chmod(handle.name, stat.S_IMODE(existing.st_mode) if existing else 0o666 & ~_umask())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

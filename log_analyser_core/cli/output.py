"""Where reports go: files written beside their target and renamed into place, and standard output
whose failure (a closed pipe, a full device) is one error line with exit 2, never a traceback."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable

from log_analyser_core.errors import ConfigError
from log_analyser_core.report.files import replace_atomically


class StdoutError(ConfigError):
    """Standard output cannot be written (a closed pipe, a full device): exit 2, one line."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(f"cannot write to standard output: {exc.strerror or exc}")


def write(content: str | bytes | Iterable[str | bytes], path: str) -> None:
    """Write a report (whole, or in pieces) to ``path`` ('-' = stdout); text as UTF-8, bytes (PDF)
    as they are. A file is written beside its target and renamed into place, so a failed write (a
    full disk, a file size limit) leaves the previous report whole and no truncated one."""
    pieces = [content] if isinstance(content, str | bytes) else content
    if path == "-":
        to_stdout(*pieces)
        return
    try:
        replace_atomically(path, (p.encode("utf-8") if isinstance(p, str) else p for p in pieces))
    except OSError as exc:
        raise ConfigError(f"cannot write report: {exc.strerror or exc}", path=path) from None


def to_stdout(*pieces: str | bytes) -> None:
    """Text or bytes to standard output, then flushed; a closed pipe or a full device (/dev/full)
    is raised as StdoutError."""
    try:
        for piece in pieces:
            if isinstance(piece, bytes):
                sys.stdout.flush()
                sys.stdout.buffer.write(piece)
            else:
                sys.stdout.write(piece)
        sys.stdout.flush()
        if hasattr(sys.stdout, "buffer"):
            sys.stdout.buffer.flush()
    except OSError as exc:
        raise StdoutError(exc) from None


def silence_stdout() -> None:
    """Point standard output at /dev/null after it failed: Python flushes it again at exit, and
    that flush would fail too (a second message, exit status 120)."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

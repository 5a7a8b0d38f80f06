"""Reading access logs: sources given as paths, globs or '-' (standard input), gzip, bzip2 and xz
files recognised by their magic bytes, and the lines in large chunks of String Series.

Bytes that are not UTF-8 are kept as ``\\xNN`` escapes; nothing here parses a line (file_parser does).
"""
from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import io
import lzma
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

import polars as pl

from analyser_errors import InputError

CHUNK_BYTES = 32 * 1024 * 1024
_SEPARATOR = b"\x1f"  # ASCII unit separator: never in a log line; a block containing it takes the slow path
_MAGIC: dict[bytes, Callable[..., Any]] = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
Progress = Callable[[int], None]


def resolve_sources(patterns: Sequence[str]) -> list[str]:
    """Expand globs; ``-`` stands for standard input. A pattern matching nothing is an error."""
    sources: list[str] = []
    for pattern in patterns:
        if pattern == "-" or not glob.has_magic(pattern):
            sources.append(pattern)
            continue
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise InputError(f"no file matches {pattern!r}")
        sources.extend(matches)
    return sources


def input_bytes(patterns: Sequence[str]) -> int:
    """Bytes on disk of the sources (globs expanded; standard input counts as 0)."""
    paths = [path for pattern in patterns if pattern != "-" for path in glob.glob(pattern)]
    return sum(os.path.getsize(path) for path in paths if os.path.isfile(path))


def _open(source: str) -> tuple[BinaryIO, BinaryIO]:
    """The decompressed stream and the raw one (for progress), decompressing by magic bytes."""
    try:
        raw: BinaryIO = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise InputError("no such file", path=source) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a log file", path=source) from None
    except PermissionError:
        raise InputError("permission denied", path=source) from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    head = buffered.peek(6)[:6]
    for magic, opener in _MAGIC.items():
        if head.startswith(magic):
            return opener(buffered, "rb"), buffered
    return buffered, buffered


def _read(stream: BinaryIO, size: int, source: str) -> bytes:
    try:
        return stream.read(size)
    except (EOFError, OSError, lzma.LZMAError) as exc:
        raise InputError(f"cannot read: {exc}", path=source,
                         hint="the file is truncated or corrupt") from None


def iter_chunks(source: str, progress: Progress | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[pl.Series]:
    """Yield the file's lines as String Series of roughly ``chunk_bytes`` each, in order.

    Bytes that are not UTF-8 are kept as ``\\xNN`` escapes, the way Apache logs them.
    """
    stream, raw = _open(source)
    carry, position = b"", 0
    measured = source != "-" and raw.seekable()   # not standard input or a pipe, e.g. -f <(zcat ...)
    try:
        while True:
            block = _read(stream, chunk_bytes, source)
            if progress and measured:
                now = raw.tell()
                progress(now - position)
                position = now
            if not block:
                break
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                continue
            carry = block[cut:]
            yield _split(block[:cut - 1])
        if carry:
            yield _split(carry)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def read_ahead(chunks: Iterator[pl.Series]) -> Iterator[pl.Series]:
    """``chunks``, read and split one chunk ahead on a thread while the caller parses the current
    one: reading and splitting take about a third of the parse time and overlap with Polars' work
    on the previous chunk (both release the GIL for most of it). Errors reach the caller in order."""
    ahead: queue.Queue = queue.Queue(maxsize=1)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                ahead.put(chunk)
                if stop.is_set():
                    return
        except BaseException as exc:   # handed to the consumer, which raises it
            ahead.put(exc)
        ahead.put(done)

    reader = threading.Thread(target=produce, daemon=True)
    reader.start()
    try:
        while (item := ahead.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():   # let a reader blocked on a full queue finish and close its file
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.05)
        reader.join()


def _split(block: bytes) -> pl.Series:
    """The block's lines. Valid UTF-8 goes through Polars' multi-threaded reader (one column,
    a separator byte that the block does not contain); anything else is split in Python so that
    every line, with its bytes, is kept exactly."""
    expected = block.count(b"\n") + 1
    if _SEPARATOR not in block and (block.isascii() or _is_utf8(block)):
        lines = pl.read_csv(io.BytesIO(block), has_header=False, separator=_SEPARATOR.decode(), quote_char=None,
                            schema={"raw": pl.String}).to_series().fill_null("")
        if lines.len() == expected:
            return lines.str.strip_suffix("\r")
    text = block.decode("utf-8", errors="backslashreplace")
    return pl.Series("raw", text.split("\n")).str.strip_suffix("\r")


def _is_utf8(block: bytes) -> bool:
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

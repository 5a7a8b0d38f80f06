"""Reading access logs: sources given as paths, globs or '-' (standard input), gzip, bzip2 and xz
files recognised by their magic bytes, and the lines in large chunks of String Series.

Bytes that are not UTF-8 are kept as ``\\xNN`` escapes; nothing here parses a line (file_parser does).
"""
from __future__ import annotations

import bisect
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
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import polars as pl

from log_analyser_core.errors import InputError

CHUNK_BYTES = 32 * 1024 * 1024
# A compressed input may hold far more than it weighs (100 MB of newlines bzip2 to 113 bytes):
# decompression stops here unless the user raises the cap (--max-decompressed).
MAX_DECOMPRESSED_BYTES = 20 * 1024 ** 3
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
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:   # zlib.error: corrupt deflate data
        raise InputError(f"cannot read: {exc}", path=source,
                         hint="the file is truncated or corrupt") from None


def iter_chunks(source: str, progress: Progress | None = None,
                chunk_bytes: int | None = None, max_decompressed: int | None = None) -> Iterator[pl.Series]:
    """Yield the file's lines as String Series of roughly ``chunk_bytes`` each, in order.

    Bytes that are not UTF-8 are kept as ``\\xNN`` escapes, the way Apache logs them.
    ``max_decompressed``: see ``line_blocks``.
    """
    for block, newlines in _counted_blocks(source, progress, chunk_bytes, max_decompressed):
        lines = _split(block, newlines)
        del block   # not held while the caller parses the lines
        yield lines


def line_blocks(source: str, progress: Progress | None = None,
                chunk_bytes: int | None = None, max_decompressed: int | None = None) -> Iterator[bytes]:
    """The file's bytes (decompressed) in blocks of whole lines, roughly ``chunk_bytes`` (default
    CHUNK_BYTES) each, without their last newline: a block of n lines holds n - 1 newlines.
    A plain file read to its end leaves a LineIndex of it for ``read_lines``. A compressed input
    that decompresses to more than ``max_decompressed`` bytes (default MAX_DECOMPRESSED_BYTES;
    0 = no limit) is an InputError."""
    for block, _ in _counted_blocks(source, progress, chunk_bytes, max_decompressed):
        yield block


def _counted_blocks(source: str, progress: Progress | None, chunk_bytes: int | None,
                    max_decompressed: int | None) -> Iterator[tuple[bytes, int | None]]:
    """``line_blocks``, each block with its newlines when the LineIndex counted them (else None):
    counting 200 MB of newlines twice was a tenth of the parse's CPU time."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    limit = MAX_DECOMPRESSED_BYTES if max_decompressed is None else max_decompressed
    stream, raw = _open(source)
    carry, position, decompressed = b"", 0, 0
    measured = source != "-" and raw.seekable()   # not standard input or a pipe, e.g. -f <(zcat ...)
    plain = measured and stream is raw
    index = LineIndex.of(raw) if plain else None
    try:
        while block := _read(stream, chunk_bytes, source):
            decompressed += len(block)
            if stream is not raw and limit and decompressed > limit:
                raise InputError(f"decompresses to more than {limit:,} bytes", path=source,
                                 hint="raise the limit with --max-decompressed SIZE, or 0 for none")
            block = carry + block if carry else block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
            elif plain and cut < len(block):   # the partial last line is read again with the next block, not copied
                stream.seek(cut - len(block), os.SEEK_CUR)
                carry = b""
            else:
                carry = block[cut:]
            if progress and measured:
                now = raw.tell()
                progress(now - position)
                position = now
            if cut == 0:
                continue
            newlines = index.add(block, cut) - 1 if index else None
            block = block[:cut - 1]   # the whole block read is let go before the caller gets its lines
            yield block, newlines
        if carry:
            yield carry, None
        if index:
            _INDEXES[source] = index
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def decode_line(line: bytes) -> str:
    """One line's text exactly as ``iter_chunks`` gives it (``\\xNN`` escapes, no trailing CR)."""
    return line.decode("utf-8", errors="backslashreplace").removesuffix("\r")


@dataclass
class LineIndex:
    """Where, every few dozen kilobytes of a plain file, a line starts: (line number, byte offset)
    pairs, so that example lines can be read back without reading the file again from the top
    (the idea of the standard library's linecache, without keeping the text). It holds while the
    file is the same one, only grown: same device and inode, no smaller."""

    identity: tuple[int, int, int]          # device, inode, size when indexed
    lines: list[int] = field(default_factory=lambda: [1])
    offsets: list[int] = field(default_factory=lambda: [0])
    _next_line: int = 1
    _next_offset: int = 0

    @classmethod
    def of(cls, file: BinaryIO) -> LineIndex:
        status = os.fstat(file.fileno())
        return cls((status.st_dev, status.st_ino, status.st_size))

    def add(self, block: bytes, end: int) -> int:
        """Index the whole lines ``block[:end]`` (``end`` just after a newline), read next in the file;
        their number."""
        first, start = self._next_line, 0
        while (cut := block.find(b"\n", start + INDEX_STEP, end) + 1) > 0:
            self._next_line += block.count(b"\n", start, cut)
            self._next_offset += cut - start
            self.lines.append(self._next_line)
            self.offsets.append(self._next_offset)
            start = cut
        self._next_line += block.count(b"\n", start, end)
        self._next_offset += end - start
        return self._next_line - first

    def holds_for(self, path: str) -> bool:
        try:
            status = os.stat(path)
        except OSError:
            return False
        device, inode, size = self.identity
        return (status.st_dev, status.st_ino) == (device, inode) and status.st_size >= size


INDEX_STEP = 64 * 1024
_INDEXES: dict[str, LineIndex] = {}   # by source, as given to line_blocks


def read_lines(source: str, line_numbers: Iterable[int]) -> dict[int, str]:
    """The text of the given 1-based lines of ``source`` (decompressed), exactly as ``iter_chunks``
    gives them: how evidence fetches example lines, since the events table keeps no raw text.
    A plain file already read through has its LineIndex: only the pieces holding a wanted line
    are read. Otherwise the file is read from the top, only blocks holding one being split."""
    if source == "-":
        raise InputError("lines read from standard input cannot be read again", path=source)
    wanted = sorted({n for n in line_numbers if n >= 1})
    index = _INDEXES.get(source)
    if index is not None and index.holds_for(source):
        return _read_indexed(source, index, wanted)
    found: dict[int, str] = {}
    first = 1
    for block in line_blocks(source):
        if not wanted:
            break
        first = _take(block, first, wanted, found)
    return found


def _take(block: bytes, first: int, wanted: list[int], found: dict[int, str]) -> int:
    """Move the lines of ``wanted`` (sorted, popped from the front) inside ``block``, whose first
    line is number ``first``, into ``found``; the number of the line after the block."""
    end = first + block.count(b"\n") + 1
    if wanted and wanted[0] < end:
        lines = block.split(b"\n")
        while wanted and wanted[0] < end:
            number = wanted.pop(0)
            found[number] = decode_line(lines[number - first])
    return end


def _read_indexed(source: str, index: LineIndex, wanted: list[int]) -> dict[int, str]:
    """read_lines through the index: from the indexed line before each wanted one, read until that
    line is whole (or the file ends), then take every wanted line the bytes read hold."""
    found: dict[int, str] = {}
    with open(source, "rb") as file:
        while wanted:
            piece = bisect.bisect_right(index.lines, wanted[0]) - 1
            first = index.lines[piece]
            file.seek(index.offsets[piece])
            data, ended = file.read(INDEX_STEP), False
            while data.count(b"\n") <= wanted[0] - first and not ended:
                more = file.read(INDEX_STEP)
                data, ended = data + more, not more
            whole = data.removesuffix(b"\n") if ended else data[:data.rfind(b"\n")]
            before = len(wanted)
            if data or not ended:
                _take(whole, first, wanted, found)
            if len(wanted) == before:
                break   # past the end of the file: there is no such line
    return found


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


def _split(block: bytes, newlines: int | None = None) -> pl.Series:
    """The block's lines. Valid UTF-8 goes through Polars' multi-threaded reader (one column,
    a separator byte that the block does not contain); anything else is split in Python so that
    every line, with its bytes, is kept exactly. ``newlines``: the block's, when already counted."""
    expected = (block.count(b"\n") if newlines is None else newlines) + 1
    if _SEPARATOR not in block and (block.isascii() or _is_utf8(block)):
        lines = pl.read_csv(io.BytesIO(block), has_header=False, separator=_SEPARATOR.decode(), quote_char=None,
                            schema={"raw": pl.String}).to_series().fill_null("")
        if lines.len() == expected:
            return lines.str.strip_suffix("\r") if b"\r" in block else lines   # a copy of every line, else
    text = block.decode("utf-8", errors="backslashreplace")
    return pl.Series("raw", text.split("\n")).str.strip_suffix("\r")


def _is_utf8(block: bytes) -> bool:
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

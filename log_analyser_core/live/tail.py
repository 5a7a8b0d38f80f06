"""Follow growing log files with ``tail -F`` semantics, by file identity rather than by name.

A file is known by (device, inode). Each poll resolves the paths and globs again, so a file that
appears later is picked up (from its start); a name that now points at another inode is a
rotation by rename: the old file is read to its end (the server may write to it a little longer)
before it is let go, and the new one is read from its start. A file that shrinks, or whose bytes
just before the read position changed, was truncated in place (copy-truncate) and is read again
from its start. Only whole lines are returned; a last line without its newline waits for it.
A file renamed to another name that the patterns also match (``access.log*``) keeps its place,
so no line is read twice.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

READ_BYTES = 4 * 2**20        # per file and poll (~20k lines): with follow.BATCH_LINES, bounds a catching-up batch
HEAD_BYTES = 4096             # the file's first bytes, compared to notice copy-truncate ...
MARK_BYTES = 256              # ... and those just before the read position
GONE_GRACE_SECONDS = 5.0      # a renamed or deleted file is read this long after its last new line
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


@dataclass
class Place:
    """Where reading stands in one file: bytes and lines consumed (whole lines only)."""

    path: str
    dev: int
    ino: int
    offset: int = 0
    lines: int = 0            # lines before ``offset``: the next line's number is lines + 1

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "dev": self.dev, "ino": self.ino, "offset": self.offset, "lines": self.lines}

    @classmethod
    def from_json(cls, data: dict) -> Place:
        return cls(str(data["path"]), int(data["dev"]), int(data["ino"]), int(data["offset"]), int(data["lines"]))


@dataclass(frozen=True)
class Chunk:
    """Whole lines read from one file: line numbers ``first_line`` on (1-based, per file)."""

    source: str
    first_line: int
    lines: list[str]


@dataclass
class _Open:
    place: Place
    handle: object            # the open binary file (BinaryIO)
    mark: bytes = b""         # _mark() when last read: changes if the file was rewritten
    gone_since: float | None = None   # when its name stopped pointing at it


@dataclass
class Tailer:
    """Follows ``patterns`` (paths and globs). Files present at the first poll start at their end
    unless ``from_start``; files that appear later start at their beginning. ``places`` resumes
    from a checkpoint (by device and inode); ``clock`` is monotonic seconds."""

    patterns: Sequence[str]
    from_start: bool = False
    places: Sequence[Place] = ()
    clock: Callable[[], float] = time.monotonic
    _open: dict[tuple[int, int], _Open] = field(default_factory=dict)
    _polled: bool = False
    _skipped: set[str] = field(default_factory=set)

    def poll(self) -> list[Chunk]:
        """The whole lines written since the last poll, per file (at most READ_BYTES a file)."""
        self._discover()
        chunks = []
        for key, entry in list(self._open.items()):
            chunk = self._read(entry)
            if chunk is not None:
                chunks.append(chunk)
            elif entry.gone_since is not None and self.clock() - entry.gone_since > GONE_GRACE_SECONDS:
                log.info("%s: rotated away and read to its end", entry.place.path)
                self._close(key)
        self._polled = True
        return chunks

    def places_now(self) -> list[Place]:
        """Every followed file's place, for a checkpoint."""
        return [Place(**vars(entry.place)) for entry in self._open.values()]

    def close(self) -> None:
        for key in list(self._open):
            self._close(key)

    def _close(self, key: tuple[int, int]) -> None:
        entry = self._open.pop(key)
        entry.handle.close()  # type: ignore[attr-defined]

    def _names(self) -> list[str]:
        names: list[str] = []
        for pattern in self.patterns:
            found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            names += [name for name in found if name not in names]
        return names

    def _discover(self) -> None:
        seen: set[tuple[int, int]] = set()
        for name in self._names():
            try:
                stat = os.stat(name)
            except OSError:
                continue   # not there (yet): tail -F waits for it
            key = (stat.st_dev, stat.st_ino)
            seen.add(key)
            if key in self._open:
                self._open[key].place.path = name   # renamed to a name the patterns also match
                self._open[key].gone_since = None
            elif name.endswith(COMPRESSED):
                if name not in self._skipped:
                    self._skipped.add(name)
                    log.warning("%s: compressed files cannot grow; not followed", name)
            elif os.path.isfile(name):
                self._start(name, key, stat.st_size)
        now = self.clock()
        for key, entry in self._open.items():
            if key not in seen and entry.gone_since is None:
                entry.gone_since = now

    def _start(self, name: str, key: tuple[int, int], size: int) -> None:
        try:
            handle = open(name, "rb")  # noqa: SIM115 - held open across polls, closed in _close
        except OSError as exc:
            if name not in self._skipped:   # said once; tried again at each poll
                self._skipped.add(name)
                log.warning("%s: cannot open: %s", name, exc.strerror)
            return
        place = next((p for p in self.places if (p.dev, p.ino) == key and p.offset <= size), None)
        if place is not None:
            place = Place(name, *key, place.offset, place.lines)
        elif self._polled or self.from_start:
            place = Place(name, *key)
        else:
            place = Place(name, *key, size, _count_lines(handle, size))
            place.offset -= _partial_tail(handle, size)
        entry = _Open(place, handle)
        entry.mark = _mark(handle, place.offset)
        self._open[key] = entry
        log.info("%s: following from line %d", name, place.lines + 1)

    def _read(self, entry: _Open) -> Chunk | None:
        handle, place = entry.handle, entry.place
        size = os.fstat(handle.fileno()).st_size  # type: ignore[attr-defined]
        if size < place.offset or _mark(handle, place.offset) != entry.mark:
            log.warning("%s: truncated (copy-truncate rotation); reading from its start", place.path)
            place.offset, place.lines = 0, 0
        if size == place.offset:
            return None
        handle.seek(place.offset)  # type: ignore[attr-defined]
        block = handle.read(min(size - place.offset, READ_BYTES))  # type: ignore[attr-defined]
        end = block.rfind(b"\n") + 1
        if end == 0:
            block, end = _longer_line(handle, block, size - place.offset)
        if end == 0:
            return None   # no whole line yet
        # split on newlines only: str.splitlines() would also split at U+2028, \x85 or \x1c, which a
        # client can put into a JSON log's user agent, and the line numbers would no longer match
        # and invalid UTF-8 as \xNN escapes, as the batch reader gives it (reader.decode_line)
        lines = block[:end - 1].decode("utf-8", errors="backslashreplace").split("\n")
        chunk = Chunk(place.path, place.lines + 1, [line.removesuffix("\r") for line in lines])
        place.offset += end
        place.lines += block.count(b"\n", 0, end)
        entry.mark = _mark(handle, place.offset)
        if entry.gone_since is not None:
            entry.gone_since = self.clock()   # still written to: keep reading it
        return chunk


def _longer_line(handle, block: bytes, left: int) -> tuple[bytes, int]:
    """``block`` (READ_BYTES without a newline) continued to the end of its line, if that has been
    written: a line longer than READ_BYTES would otherwise never be read, nor any after it."""
    while len(block) < left:
        more = handle.read(min(left - len(block), READ_BYTES))
        if not more:
            break
        newline = more.find(b"\n")
        if newline >= 0:
            return block + more, len(block) + newline + 1
        block += more
    return block, 0


def _mark(handle, offset: int) -> bytes:
    """The file's first bytes and those just before ``offset`` (both read already): if they change,
    the file was truncated and written again under us, even to a larger size than before (copy-truncate,
    then a burst of new lines before the next poll). Log lines carry times and addresses, so new
    lines do not repeat the old bytes."""
    handle.seek(0)
    head = handle.read(min(offset, HEAD_BYTES))
    start = max(0, offset - MARK_BYTES)
    handle.seek(start)
    return head + handle.read(offset - start)


def _count_lines(handle, size: int) -> int:
    handle.seek(0)
    count, read = 0, 0
    while read < size:
        block = handle.read(min(2**20, size - read))
        if not block:
            break
        count += block.count(b"\n")
        read += len(block)
    return count


def _partial_tail(handle, size: int) -> int:
    """Bytes after the last newline (a line still being written), to be read once it ends."""
    start = max(0, size - 65536)
    handle.seek(start)
    block = handle.read(size - start)
    cut = block.rfind(b"\n")
    return len(block) - cut - 1 if cut >= 0 else len(block)

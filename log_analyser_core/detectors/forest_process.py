"""A run's Isolation Forest in a Python process of its own.

Importing scikit-learn's ensemble module costs about 1.4 s of CPU (most of it SciPy's statistics and
pandas, which its utilities import). In the analysing process that import, even on a thread, holds
the GIL against the parse for most of that time. Started as a run begins, this process imports
scikit-learn on the other core while the log is parsed; the run then fits, scores and explains its
forest here over two pipes, and never imports scikit-learn itself. The same functions
(detectors/forest.py) run either way, so the scores are those of a forest fitted in the run's
own process, to the bit (tests/test_forest_process.py).

The protocol: a request or an answer is one line of JSON, then the raw bytes of each float64
matrix the line lists by shape (C order). Nothing is pickled; the process reads only what its
parent writes. When the process is gone or fails a request, the caller fits the forest itself
(``Lost``).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from log_analyser_core.detectors import forest

MATRIX = np.dtype("<f8")
MAX_HEADER = 1 << 16
# Inputs (bytes on disk) whose run starts a forest process: a smaller one parses in well under the
# import's time, and most such runs have too few clients to fit a forest at all; on a larger one
# the run fits in its own process (memory first: no overlap of stages, no second copy of the matrix).
MIN_BYTES = 2**20
MAX_BYTES = 512 * 2**20
# The child runs with -P (no script folder or working folder first on sys.path: a file named like
# a library in the user's folder cannot stand in for it) and finds this package where this process did.
# It ignores SIGINT: Ctrl-C reaches the whole process group, and the run it serves handles it (the
# child then meets the end of its input) instead of printing a traceback from inside an import.
_CHILD = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
          "import sys; root = sys.argv[1]; root in sys.path or sys.path.append(root); "
          "from log_analyser_core.detectors import forest_process; forest_process.serve()")


_spare: ForestProcess | None = None   # started by start_early, not yet taken


def start_early(paths: list[str]) -> None:
    """Start the process that a run over ``paths`` will take (``take``), before that run imports its
    own libraries (Polars, the pipeline: about 0.4 s): its scikit-learn import is what a run on a
    few megabytes waits for. Only for plain files whose sizes add up to MIN_BYTES..MAX_BYTES."""
    global _spare
    try:
        size = sum(os.stat(path).st_size for path in paths)
    except (OSError, ValueError):   # a glob, standard input, a URI: the run decides itself
        return
    if _spare is None and MIN_BYTES <= size < MAX_BYTES:
        _spare = ForestProcess.start()
        atexit.register(discard)   # should the run fail before it takes it


def take() -> ForestProcess | None:
    """The process started early, else a new one (None if none could be started)."""
    global _spare
    process, _spare = _spare, None
    return process or ForestProcess.start()


def discard() -> None:
    """End a process started early that no run took."""
    global _spare
    process, _spare = _spare, None
    if process is not None:
        process.close(at_once=True)   # it holds nothing yet, and may still be importing


class Lost(Exception):
    """The forest's process is gone, or could not do what it was asked: the caller fits here."""


class ForestProcess:
    """The client side: one request at a time, from any thread."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._lock = threading.Lock()
        # whose forest the process holds (the detector that last fitted or read one there): it holds
        # one, so a detector whose forest was replaced must not be answered from another's
        self.holder: object | None = None

    @classmethod
    def start(cls) -> ForestProcess | None:
        """A new process importing scikit-learn, or None if none could be started."""
        root = str(Path(__file__).resolve().parents[2])
        try:
            process = subprocess.Popen([sys.executable, "-P", "-c", _CHILD, root], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE)
        except OSError:
            return None
        return cls(process)

    def fit(self, X: np.ndarray, n_estimators: int, max_samples: int | str, random_state: int) -> None:
        """Fit the process's forest (and its scaler) on ``X``, replacing any it held."""
        self._call("fit", [X], n_estimators=n_estimators, max_samples=max_samples, random_state=random_state)

    def load(self, path: str, width: int) -> dict:
        """Read a saved forest into the process (forest.load); its parameters. forest.Refused as
        forest.load refuses it."""
        params = self._call("load", [], path=path, width=width)[0].get("params")
        if not isinstance(params, dict):
            raise Lost("the forest's process gave no parameters")
        return params

    def scores(self, X: np.ndarray) -> np.ndarray:
        """forest.forest_scores of the scaled rows (scikit-learn's sign: higher = more normal)."""
        return self._call("scores", [X])[1][0]

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """forest.path_contributions of the rows."""
        return self._call("contributions", [X])[1][0]

    def _call(self, op: str, arrays: list[np.ndarray], **params: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
        with self._lock:
            if self._process.stdin is None or self._process.stdin.closed:
                raise Lost("the forest's process was closed")
            try:
                write(self._process.stdin, {"op": op, **params}, arrays)
                assert self._process.stdout is not None, "started with a pipe"
                header, answer = read(self._process.stdout)
            except (OSError, EOFError, ValueError) as error:
                self._end()
                raise Lost(f"the forest's process is gone ({error})") from error
        if isinstance(header.get("refused"), str):
            raise forest.Refused(header["refused"], trust=header.get("trust") is True)
        if header.get("ok") is not True:
            raise Lost(str(header.get("error", "the forest's process gave no answer")))
        return header, answer

    def close(self, at_once: bool = False) -> None:
        """End the process: it exits when its input closes, once it is done importing; ``at_once``
        kills it instead."""
        with self._lock:
            if at_once:
                self._process.kill()
            self._end()

    def _end(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


def write(stream: IO[bytes], header: dict[str, Any], arrays: list[np.ndarray]) -> None:
    """One message: ``header`` with the arrays' shapes as a line of JSON, then their bytes."""
    arrays = [np.ascontiguousarray(array, dtype=MATRIX) for array in arrays]
    stream.write(json.dumps({**header, "arrays": [list(array.shape) for array in arrays]}).encode() + b"\n")
    for array in arrays:
        if array.size:
            stream.write(array.data.cast("B"))
    stream.flush()


def read(stream: IO[bytes]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One message written by ``write``. EOFError when the stream ends before it (or at its start);
    ValueError when its line is not such a header."""
    line = stream.readline(MAX_HEADER)
    if not line.endswith(b"\n"):
        raise EOFError("no message")
    header = json.loads(line)
    shapes = header.get("arrays") if isinstance(header, dict) else None
    if not isinstance(shapes, list) or not all(_shape(shape) for shape in shapes):
        raise ValueError("not a message of this protocol")
    arrays = []
    for shape in shapes:
        array = np.empty(shape, MATRIX)
        view = array.data.cast("B") if array.size else memoryview(b"")
        done = 0
        while done < len(view):
            got = stream.readinto(view[done:])   # type: ignore[attr-defined]
            if not got:
                raise EOFError("the stream ended inside a matrix")
            done += got
        arrays.append(array)
    return header, arrays


def _shape(shape: object) -> bool:
    return isinstance(shape, list) and 1 <= len(shape) <= 2 and \
        all(type(n) is int and 0 <= n < 1 << 40 for n in shape)


def serve() -> NoReturn:
    """The process's side: import scikit-learn, then answer requests until the input closes.
    Standard output carries the answers alone: anything printed goes to standard error."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    try:   # the point of this process: done while the run parses
        import sklearn.ensemble  # noqa: F401
        import sklearn.preprocessing  # noqa: F401
        broken = None
    except Exception as error:  # noqa: BLE001 - told to the parent, which then fits itself
        broken = f"scikit-learn could not be imported ({type(error).__name__}: {error})"
    fitted = None
    while True:
        try:
            header, arrays = read(requests)
        except (EOFError, ValueError):   # the parent is done (or out of step): nothing to answer or to keep
            os._exit(0)   # at once: tearing down scikit-learn's modules took 0.3 s, which the parent waited for
        try:
            if broken:
                raise RuntimeError(broken)
            op = header.get("op")
            if op not in ("fit", "load", "scores", "contributions"):
                raise ValueError(f"unknown request {op!r}")
            extra: dict[str, Any] = {}
            answer: list[np.ndarray] = []
            if op == "fit":
                fitted = forest.fit(arrays[0], header["n_estimators"], header["max_samples"], header["random_state"])
            elif op == "load":
                scaler, model, params = forest.load(header["path"], header["width"])
                fitted, extra = (scaler, model), {"params": params}
            elif fitted is None:
                raise RuntimeError(f"{op!r} asked before a fit")
            elif op == "scores":
                answer = [forest.forest_scores(fitted[1], fitted[0].transform(arrays[0]))]
            else:
                answer = [forest.path_contributions(*fitted, arrays[0])]
            write(answers, {"ok": True, **extra}, answer)
        except forest.Refused as refused:
            write(answers, {"ok": False, "refused": str(refused), "trust": refused.trust}, [])
        except Exception as error:  # noqa: BLE001 - the parent fits itself, and meets it there if it is real
            write(answers, {"ok": False, "error": f"{type(error).__name__}: {error}"}, [])

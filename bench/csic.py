"""HTTP DATASET CSIC 2010 rendered as access-log lines (read from ../shared, never copied).

CSIC holds raw HTTP requests (request line, headers, body) labelled normal or anomalous, with no
client, time or status. A log shows the request line, User-Agent, Referer and Host only, so each
request becomes one combined-format line with those; a POST's body (where many of CSIC's
anomalous payloads are) is not in it. ``labelled_lines`` keeps that apart: ``visible`` is True
when the request's URL carries a query, i.e. when a log could show its payload at all.

    python bench/csic.py anomalous -o /tmp/csic_anomalous.log
"""
from __future__ import annotations

import argparse
import gzip
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "public" / "realivanivani_net-traffic-classifier" / "csic_dataset.zip"
MEMBERS = {"anomalous": "csic_dataset/anomalousTrafficTest.txt.gz",
           "normal": "csic_dataset/normalTrafficTest.txt.gz",
           "training": "csic_dataset/normalTrafficTraining.txt.gz"}
_START = re.compile(r"^(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|TRACE) (http://[^ ]+) (HTTP/\d\.\d)\r?$", re.M)


@dataclass(frozen=True)
class Request:
    method: str
    target: str          # path and query as sent, without scheme and host
    protocol: str
    host: str | None
    user_agent: str | None
    referer: str | None

    @property
    def visible(self) -> bool:
        """A log shows this request's parameters (they are in the URL, not a body)."""
        return "?" in self.target


def read(kind: str, archive: Path = ARCHIVE) -> list[Request]:
    """The requests of one CSIC file: ``anomalous``, ``normal`` (test) or ``training``."""
    with zipfile.ZipFile(archive) as z:
        text = gzip.decompress(z.read(MEMBERS[kind])).decode("latin-1")
    starts = list(_START.finditer(text))
    requests = []
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        block = text[match.end():following.start() if following else len(text)]
        headers = _headers(block)
        target = re.sub(r"^http://[^/]+", "", match.group(2))
        requests.append(Request(match.group(1), target, match.group(3), headers.get("host"),
                                headers.get("user-agent"), headers.get("referer")))
    return requests


def _headers(block: str) -> dict[str, str]:
    head = block.split("\r\n\r\n", 1)[0]
    out = {}
    for line in head.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def log_line(request: Request, number: int) -> str:
    """One combined-format line; client 10.x.y.z numbered by request, times one second apart."""
    client = f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
    second = number % 60
    minute = number // 60 % 60
    hour = number // 3600 % 24

    def quoted(value: str | None) -> str:
        return "-" if value is None else value.replace("\\", "\\\\").replace('"', '\\"')
    return (f'{client} - - [01/Nov/2010:{hour:02d}:{minute:02d}:{second:02d} +0000] '
            f'"{request.method} {request.target} {request.protocol}" 200 0 {_q(quoted(request.referer))} '
            f'{_q(quoted(request.user_agent))}')


def _q(text: str) -> str:
    return f'"{text}"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(MEMBERS))
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--visible-only", action="store_true", help="only requests whose parameters a log shows")
    args = parser.parse_args()
    requests = [r for r in read(args.kind) if r.visible or not args.visible_only]
    Path(args.output).write_text("".join(log_line(r, i) + "\n" for i, r in enumerate(requests)), encoding="utf-8")
    print(f"{len(requests)} requests -> {args.output}")


if __name__ == "__main__":
    main()

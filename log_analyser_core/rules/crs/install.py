"""Where the Core Rule Set comes from: the project does not ship it.

``update(version)`` downloads a CRS release archive, checks it against its published SHA-256
(``<archive>.sha256``, or a digest the caller gives) and unpacks it into the user data dir
(``<user data dir>/log_analyser/crs/<version>/``), recording it as the current one;
``installed()`` finds it again, so later runs use it without ``--crs``. The network is behind
``fetch`` (a callable), so tests serve a tarball from a local HTTP server.
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from log_analyser_core.errors import RulesError

if TYPE_CHECKING:   # urllib (ssl, http) and tarfile are imported only to install: a run imports this module
    import tarfile

log = logging.getLogger(__name__)
APP_NAME = "log_analyser"
DEFAULT_VERSION = "4.28.0"   # the release `rules update --crs` installs when no version is given
RELEASE_URL = "https://github.com/coreruleset/coreruleset/releases/download/v{version}/coreruleset-{version}-minimal.tar.gz"
CURRENT = "CURRENT"
MAX_ARCHIVE_BYTES = 50 * 2**20
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?$")
Fetch = Callable[[str], bytes]


def data_dir() -> Path:
    """``<user data dir>/log_analyser/crs`` (platformdirs; XDG_DATA_HOME on Linux)."""
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False) / "crs"


def installed(base: Path | None = None) -> Path | None:
    """The CRS folder ``update`` installed last, or None."""
    base = base or data_dir()
    marker = base / CURRENT
    if not marker.is_file():
        return None
    folder = base / marker.read_text(encoding="utf-8").strip()
    return folder if (folder / "rules").is_dir() else None


def http_fetch(url: str, timeout: float = 30.0) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise RulesError(f"not an http(s) URL: {url}")
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:   # noqa: S310 - scheme checked above
            data = response.read(MAX_ARCHIVE_BYTES + 1)
    except OSError as error:
        raise RulesError(f"could not download {url}: {error}", hint="check the network, or use --crs DIR") from None
    if len(data) > MAX_ARCHIVE_BYTES:
        raise RulesError(f"{url} is larger than {MAX_ARCHIVE_BYTES // 2**20} MiB")
    return data


def update(version: str = DEFAULT_VERSION, *, url_template: str = RELEASE_URL, sha256: str | None = None,
           fetch: Fetch = http_fetch, base: Path | None = None) -> Path:
    """Download, verify and install CRS ``version``; returns the installed folder."""
    if not _VERSION.match(version):
        raise RulesError(f"not a CRS version: {version!r}", hint="e.g. 4.28.0")
    url = url_template.format(version=version)
    archive = fetch(url)
    expected = (sha256 or _published_digest(fetch(url + ".sha256"), url)).lower()
    actual = hashlib.sha256(archive).hexdigest()
    if actual != expected:
        raise RulesError(f"the CRS archive's SHA-256 is {actual}, not the published {expected}",
                         hint="nothing was installed; try again, or download it yourself and use --crs DIR")
    base = base or data_dir()
    target = base / version
    _unpack(archive, target)
    (base / CURRENT).write_text(version + "\n", encoding="utf-8")
    log.info("installed CRS %s in %s", version, target)
    return target


def _published_digest(text: bytes, url: str) -> str:
    """The hex digest in a ``sha256sum`` line (``<hex>  <file name>``)."""
    match = re.match(rb"\s*([0-9a-fA-F]{64})\b", text)
    if not match:
        raise RulesError(f"no SHA-256 digest in {url}.sha256", hint="give it with --sha256 HEX")
    return match.group(1).decode("ascii")


def _unpack(archive: bytes, target: Path) -> None:
    """Extract the archive's rules/ folder (and nothing outside it) into ``target``."""
    import tarfile

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
                members = [m for m in tar.getmembers() if _wanted(m)]
                if not any(m.name.endswith(".conf") for m in members):
                    raise RulesError("the CRS archive holds no rules/*.conf files")
                tar.extractall(scratch, members=members, filter="data")
        except (tarfile.TarError, OSError) as error:
            raise RulesError(f"could not unpack the CRS archive: {error}") from None
        rules = next(Path(scratch).rglob("rules"))
        staged = Path(scratch) / "staged"
        staged.mkdir()
        shutil.move(str(rules), staged / "rules")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staged), target)


def _wanted(member: tarfile.TarInfo) -> bool:
    parts = Path(member.name).parts
    return (member.isfile() or member.isdir()) and "rules" in parts and ".." not in parts

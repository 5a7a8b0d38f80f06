"""Where the Core Rule Set comes from: the project does not ship it.

``update(version)`` downloads a CRS release archive, checks it against its published SHA-256
(``<archive>.sha256``, else the digest GitHub's release API lists for the asset, or a digest the
caller gives) and unpacks it into the user data dir
(``<user data dir>/log_analyser/crs/<version>/``), recording it as the current one;
``installed()`` finds it again, so later runs use it without ``--crs``: the user's, else one
installed system-wide (``<site data dir>/log_analyser/crs``, where the Docker image puts the
release it fetches at build time). The network is behind
``fetch`` (a callable), so tests serve a tarball from a local HTTP server.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
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
GITHUB_API = "https://api.github.com"
_GITHUB_ASSET = re.compile(r"^(?P<host>https?://[^/]+)/(?P<owner>[^/]+)/(?P<repo>[^/]+)/releases/download/"
                           r"(?P<tag>[^/]+)/(?P<name>[^/?#]+)$")


def data_dir() -> Path:
    """``<user data dir>/log_analyser/crs`` (platformdirs; XDG_DATA_HOME on Linux)."""
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False) / "crs"


def site_dirs() -> list[Path]:
    """``<site data dir>/log_analyser/crs`` for each system data dir (XDG_DATA_DIRS on Linux)."""
    from platformdirs import site_data_dir

    return [Path(d) / "crs" for d in site_data_dir(APP_NAME, appauthor=False, multipath=True).split(os.pathsep)]


def installed(base: Path | None = None) -> Path | None:
    """The CRS folder ``update`` installed last in ``base``, or None; without ``base``, the user's
    data dir, else the first system data dir that holds one."""
    if base is None:
        return next(filter(None, (installed(b) for b in (data_dir(), *site_dirs()))), None)
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
           fetch: Fetch = http_fetch, base: Path | None = None, github_api: str | None = None) -> Path:
    """Download, verify and install CRS ``version``; returns the installed folder. The digest is
    ``sha256``, else ``<archive URL>.sha256``, else, for a GitHub release asset, the SHA-256 GitHub
    lists for it (``github_api``: the API's base URL, default api.github.com for github.com URLs)."""
    if not _VERSION.match(version):
        raise RulesError(f"not a CRS version: {version!r}", hint="e.g. 4.28.0")
    url = url_template.format(version=version)
    archive = fetch(url)
    expected = (sha256 or published_digest(url, fetch, github_api)).lower()
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


def published_digest(url: str, fetch: Fetch = http_fetch, github_api: str | None = None) -> str:
    """The archive's published SHA-256: the ``sha256sum`` line at ``<url>.sha256`` or, when there
    is none and ``url`` is a GitHub release asset, the ``digest`` GitHub's release API lists for
    it (CRS publishes no .sha256 files; GitHub computes a digest for every asset it stores)."""
    try:
        return _sha256_line(fetch(url + ".sha256"), url)
    except RulesError:
        asset = _GITHUB_ASSET.match(url)
        api = github_api or (GITHUB_API if asset and asset["host"] == "https://github.com" else None)
        if asset is None or api is None:
            raise
    release = f"{api}/repos/{asset['owner']}/{asset['repo']}/releases/tags/{asset['tag']}"
    try:
        assets = json.loads(fetch(release))["assets"]
        digest = next(a.get("digest") or "" for a in assets if a["name"] == asset["name"])
    except (ValueError, KeyError, TypeError, StopIteration):
        digest = ""
    if not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", digest):
        raise RulesError(f"neither {url}.sha256 nor the release's GitHub API entry gives a SHA-256 for it",
                         hint="give it with --sha256 HEX")
    return digest.removeprefix("sha256:")


def _sha256_line(text: bytes, url: str) -> str:
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

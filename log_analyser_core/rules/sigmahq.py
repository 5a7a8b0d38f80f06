"""``log_analyser rules update``: SigmaHQ's released rule package, verified, in the user data dir.

The built-in packs stand on their own; this is for users who want SigmaHQ's own webserver rules
beside them (``--rules DIR``, with the folder ``update`` prints). A release is read from GitHub's
release API (``release_url``); the package's SHA-256 is the ``digest`` GitHub publishes for the
asset, and a download that does not match it is refused, as is an asset without one. Only the
rules whose logsource category is ``webserver`` are kept (the others never run here), each written
under a fresh folder named after the release, which replaces the previous one only when complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import urllib3
import yaml
from urllib3.util import Retry, Timeout

from log_analyser_core.errors import RulesError

log = logging.getLogger(__name__)

RELEASE_URL = "https://api.github.com/repos/SigmaHQ/sigma/releases/latest"
PACKAGES = {"core": "sigma_core.zip", "core+": "sigma_core+.zip", "core++": "sigma_core++.zip",
            "emerging-threats": "sigma_emerging_threats_addon.zip", "all": "sigma_all_rules.zip"}
MAX_BYTES = 100 * 2**20        # the largest package (all rules) is about 15 MB
MAX_FILE_BYTES = 2**20          # one rule file
CURRENT = "CURRENT"             # names the installed release's folder
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")   # plain http only to this machine (tests, a local mirror)
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class Installed:
    """The webserver rules of one SigmaHQ release, as installed."""

    folder: Path
    tag: str
    package: str
    sha256: str
    rules: int           # webserver rules kept
    skipped: int         # other rule files in the package (other log sources)


def data_dir() -> Path:
    """``<user data dir>/log_analyser/sigmahq`` (platformdirs)."""
    from platformdirs import user_data_path

    return user_data_path("log_analyser") / "sigmahq"


def installed(root: Path | None = None) -> Path | None:
    """The folder of the release ``update`` installed last, or None."""
    root = root or data_dir()
    try:
        tag = (root / CURRENT).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    folder = root / tag
    return folder if _TAG.match(tag) and folder.is_dir() else None


def _client(timeout: float) -> urllib3.PoolManager:
    retry = Retry(total=3, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504), raise_on_status=False)
    return urllib3.PoolManager(retries=retry, timeout=Timeout(connect=timeout, read=timeout),
                               headers={"User-Agent": "log_analyser (rules update)"})


def _get(http: urllib3.PoolManager, url: str, accept: str) -> bytes:
    parts = urlsplit(url)
    if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOCAL_HOSTS)):
        raise RulesError(f"refusing to download from {url!r}", hint="https, or a server on this machine")
    try:
        answer = http.request("GET", url, headers={"Accept": accept}, preload_content=False)
    except urllib3.exceptions.HTTPError as exc:
        raise RulesError(f"cannot reach {url}: {type(exc).__name__}", hint="check the network or --url") from None
    try:
        if answer.status != 200:
            raise RulesError(f"{url} answered HTTP {answer.status}", hint="check --url and --package")
        body = answer.read(MAX_BYTES + 1)
    finally:
        answer.release_conn()
    if len(body) > MAX_BYTES:
        raise RulesError(f"{url}: the download is larger than {MAX_BYTES // 2**20} MB; refused")
    return body


def _asset(release: object, package: str) -> tuple[str, str, str]:
    """(tag, download URL, expected sha256) of the package in a release API answer."""
    name = PACKAGES[package]
    if not isinstance(release, dict) or not isinstance(release.get("assets"), list):
        raise RulesError("the release answer is not a GitHub release (no assets)")
    tag = str(release.get("tag_name", ""))
    if not _TAG.match(tag):
        raise RulesError(f"the release has an unusable tag name {tag[:80]!r}")
    for asset in release["assets"]:
        if isinstance(asset, dict) and asset.get("name") == name:
            digest = str(asset.get("digest") or "")
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise RulesError(f"release {tag} publishes no SHA-256 digest for {name}; not installed",
                                 hint="an unverified package is never installed")
            return tag, str(asset.get("browser_download_url", "")), digest.removeprefix("sha256:")
    raise RulesError(f"release {tag} has no asset {name}", hint=f"packages: {', '.join(PACKAGES)}")


def update(package: str = "core", release_url: str = RELEASE_URL, root: Path | None = None,
           timeout: float = 30.0) -> Installed:
    """Download, verify and install the webserver rules of SigmaHQ's latest ``package``."""
    if package not in PACKAGES:
        raise RulesError(f"unknown package {package!r}", hint=f"one of {', '.join(PACKAGES)}")
    root = root or data_dir()
    http = _client(timeout)
    try:
        release = json.loads(_get(http, release_url, "application/vnd.github+json"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RulesError(f"{release_url} did not answer JSON") from None
    tag, url, expected = _asset(release, package)
    data = _get(http, url, "application/octet-stream")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise RulesError(f"{PACKAGES[package]} of release {tag}: SHA-256 {actual} does not match the published "
                         f"{expected}; not installed", hint="try again later; never install it by hand")
    return _install(data, root, tag, package, actual)


def _install(data: bytes, root: Path, tag: str, package: str, sha256: str) -> Installed:
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        kept, skipped = _extract(data, staging)
        (staging / "RELEASE.json").write_text(json.dumps({"tag": tag, "package": package, "sha256": sha256,
                                                          "rules": kept}, indent=2), encoding="utf-8")
        final = root / tag
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (root / CURRENT).write_text(tag + "\n", encoding="utf-8")
    log.info("installed SigmaHQ %s (%s): %d webserver rules in %s", tag, package, kept, final)
    return Installed(folder=final, tag=tag, package=package, sha256=sha256, rules=kept, skipped=skipped)


def _extract(data: bytes, folder: Path) -> tuple[int, int]:
    """Write the package's webserver rules under ``folder``; (kept, skipped). Member names are
    written flat (their folders joined with '__'), so no name can leave ``folder``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise RulesError("the package is not a zip archive") from None
    kept = skipped = 0
    with archive:
        for member in archive.infolist():
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if member.is_dir() or not parts or parts[-1].rsplit(".", 1)[-1] not in ("yml", "yaml"):
                continue
            safe = [p for p in parts if p not in ("", ".", "..", "/")]
            if member.file_size > MAX_FILE_BYTES or not safe:
                skipped += 1
                continue
            text = archive.read(member)
            if not _is_webserver(text):
                skipped += 1
                continue
            name = "__".join(re.sub(r"[^A-Za-z0-9._+-]", "_", p) for p in safe)
            (folder / name).write_bytes(text)
            kept += 1
    return kept, skipped


def _is_webserver(text: bytes) -> bool:
    try:
        documents = list(yaml.safe_load_all(text.decode("utf-8")))
    except (UnicodeDecodeError, yaml.YAMLError):
        return False
    return any(isinstance(d, dict) and isinstance(d.get("logsource"), dict)
               and str(d["logsource"].get("category", "")).lower() == "webserver" for d in documents)

"""The compiled Sigma rule pack, kept between runs in the user cache dir.

Reading a pack means importing pySigma (about 0.4 s of CPU), parsing every YAML file, building
pySigma's rule objects, running its validators and compiling each condition: work that gives the
same result until a rule file, the compiler or a library changes. A pack that loaded without
errors is written as JSON (rule metadata, problems, and each rule's Polars expression in Polars'
JSON form, which cannot carry Python code) under a key hashing the rule files' paths and content,
the event columns, this package's version and compiler source, and the Polars and pySigma
versions. A file that cannot be read back is ignored and rewritten.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import polars as pl

from log_analyser_core.results import AttackType, Severity
from log_analyser_core.rules.sigma_rules import CompiledRule, Problem, RuleSet

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
APP_NAME = "log_analyser"
# The modules whose code decides what a rule compiles to: their source is part of the key, so an
# edited checkout never reads a pack compiled by older code.
_COMPILER = ("sigma_engine.py", "sigma_compile.py", "sigma_views.py", "sigma_cache.py", "sigma_rules.py")


def cache_dir() -> Path:
    """``<user cache dir>/log_analyser/sigma`` (platformdirs), never the working directory."""
    from platformdirs import user_cache_path

    return user_cache_path(APP_NAME, appauthor=False) / "sigma"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def key(files: Sequence[Path], columns: Sequence[str]) -> str | None:
    """The cache key of a pack made of ``files`` read for ``columns``; None when a file cannot be
    read (loading reports that itself)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    versions = [str(CACHE_FORMAT), _version(APP_NAME), pl.__version__, _version("pysigma"), *columns]
    digest.update("\0".join(versions).encode())
    try:
        for name in _COMPILER:
            digest.update((here / name).read_bytes())
        digest.update((here.parent / "parsing" / "events.py").read_bytes())   # HEADER_COLUMNS: header fields
        for path in files:
            digest.update(b"\0" + os.fsencode(path) + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    except OSError:
        return None
    return digest.hexdigest()


def read(cache_key: str, folders: Sequence[str | Path]) -> RuleSet | None:
    """The pack stored under ``cache_key``, or None when there is none or it cannot be read."""
    path = cache_dir() / f"{cache_key}.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") != cache_key:
            return None
        rules = tuple(CompiledRule(
            id=r["id"], title=r["title"], severity=Severity[r["severity"]], status=r["status"], tags=tuple(r["tags"]),
            attack_type=AttackType(r["attack_type"]) if r["attack_type"] else None, path=r["path"],
            expression=pl.Expr.deserialize(io.StringIO(r["expression"]), format="json"),
            views=frozenset(r["views"]), fields=frozenset(r["fields"])) for r in stored["rules"])
        problems = tuple(Problem(**p) for p in stored["problems"])
        return RuleSet(tuple(map(str, folders)), rules, problems, int(stored["other_logsource"]))
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged or foreign file (JSON, key, enum or Polars errors): compile again
        log.debug("ignoring the cached Sigma pack %s: %s", path, exc)
        return None


def write(cache_key: str, ruleset: RuleSet) -> None:
    """Store ``ruleset`` under ``cache_key``; a cache dir that cannot be written is only logged."""
    folder = cache_dir()
    try:
        stored = {"key": cache_key, "other_logsource": ruleset.other_logsource,
                  "problems": [{"kind": p.kind, "path": p.path, "rule_id": p.rule_id, "message": p.message}
                               for p in ruleset.problems],
                  "rules": [_rule(r) for r in ruleset.rules]}
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, suffix=".tmp", delete=False) as file:
            temporary = file.name
            json.dump(stored, file)
        os.replace(temporary, folder / f"{cache_key}.json")   # atomic: a parallel run reads all or nothing
    except (OSError, pl.exceptions.PolarsError) as exc:
        log.debug("cannot cache the Sigma pack in %s: %s", folder, exc)
        with contextlib.suppress(OSError, NameError):
            os.unlink(temporary)


def _rule(rule) -> dict:
    return {"id": rule.id, "title": rule.title, "severity": rule.severity.name, "status": rule.status,
            "tags": list(rule.tags), "attack_type": rule.attack_type.value if rule.attack_type else None,
            "path": rule.path, "expression": rule.expression.meta.serialize(format="json"),
            "views": sorted(rule.views), "fields": sorted(rule.fields)}

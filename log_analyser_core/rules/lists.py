"""Knowledge lists as data: sensitive files, web-shell names, admin consoles, CMS enumeration,
scanner markers, open-proxy targets (``lists/*.yaml``, package data).

A list names how its entries match and where they come from (``provenance``: most are derived from
the OWASP Core Rule Set's data files, cited by file). A behaviour rule's regex filter reads one as
``path: {list: sensitive_files}``; ``pattern`` turns the list into one case-insensitive regular
expression (the entries as escaped literals, or as regexes for ``match: regex``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from log_analyser_core.errors import RulesError
from log_analyser_core.rules.packs import package_pack

MATCHES = ("segment", "word", "contains", "prefix", "regex")
BACKUP_SUFFIX = r"\.(bak|old|orig|save|swp|swo|tmp|txt|zip|gz|tar|dist|1|2)|~"   # editor and backup copies
FIELDS = {"name", "description", "provenance", "match", "entries"}


@dataclass(frozen=True)
class KnowledgeList:
    """``match``: ``segment`` (whole path segments: ``.ssh/`` is a folder anywhere, ``id_rsa`` a
    file or folder name, also with a backup suffix), ``word`` (an entry not inside a longer word:
    ``nuclei`` is not in ``nucleic``), ``prefix`` (the value starts with an entry), ``contains`` (an entry
    anywhere) or ``regex`` (entries are regular expressions)."""

    name: str
    description: str
    provenance: str
    match: str
    entries: tuple[str, ...]


def list_dir() -> Path:
    return package_pack("lists", "*.yaml", "knowledge list")


def names() -> list[str]:
    return sorted(p.stem for p in list_dir().glob("*.yaml"))


@functools.cache
def load(name: str) -> KnowledgeList:
    """The list ``name`` (a file ``lists/NAME.yaml``); RulesError naming the file when it is wrong."""
    path = list_dir() / f"{name}.yaml"
    if name not in names():
        raise RulesError(f"no knowledge list named {name!r} (one of {', '.join(names())})")
    try:
        # libyaml's safe loader where PyYAML has it (as for behaviour rules): same documents, a fraction of the time
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RulesError(f"cannot read knowledge list: {str(exc).splitlines()[0]}", path=str(path)) from None
    problems = _problems(data, name)
    if problems:
        raise RulesError(f"knowledge list {name}: {'; '.join(problems)}", path=str(path))
    return KnowledgeList(name=name, description=str(data["description"]), provenance=str(data["provenance"]),
                         match=data["match"], entries=tuple(str(e) for e in data["entries"]))


def _problems(data: object, name: str) -> list[str]:
    if not isinstance(data, dict):
        return ["must be a mapping"]
    problems = [f"unknown field {key!r}" for key in sorted(set(data) - FIELDS)]
    problems += [f"{key} missing" for key in sorted(FIELDS - set(data))]
    if data.get("name") != name:
        problems.append(f"name must be {name!r}, the file's name")
    if data.get("match") not in MATCHES:
        problems.append(f"match must be one of {', '.join(MATCHES)}")
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e for e in entries):
        problems.append("entries must be a non-empty list of strings")
    elif len(set(entries)) != len(entries):
        problems.append("duplicate entries: " + ", ".join(sorted({e for e in entries if entries.count(e) > 1})))
    return problems


def _literal(text: str) -> str:
    """``text`` as a literal in the Rust regex dialect."""
    return "".join("\\" + c if c in r"\.+*?()|[]{}^$#&-~" else c for c in text)


def pattern(name: str) -> str:
    """The list as one regular expression (matched case-insensitively by its reader)."""
    known = load(name)
    if known.match == "regex":
        return "(" + "|".join(f"(?:{e})" for e in known.entries) + ")"
    alternatives = "|".join(_literal(e.lower()) for e in known.entries)
    if known.match == "contains":
        return f"({alternatives})"
    if known.match == "word":
        return f"(^|[^a-z0-9])({alternatives})($|[^a-z0-9])"
    if known.match == "prefix":
        return f"^({alternatives})"
    # segment: after a '/' (or at the start). A name ends at '/', ';', '?' or the end, or carries a
    # backup suffix (.bak, .old, ~...); a folder entry ('.ssh/') ends with its own '/'.
    files = [_literal(e.lower()) for e in known.entries if not e.endswith("/")]
    folders = [_literal(e.lower()) for e in known.entries if e.endswith("/")]
    parts = []
    if files:
        parts.append(f"(^|/)({'|'.join(files)})($|[/;?#]|({BACKUP_SUFFIX})+$)")
    if folders:
        parts.append(f"(^|/)({'|'.join(folders)})")
    return "|".join(parts)

"""Reading OWASP CRS rule files: the part of ModSecurity's SecLang that request rules use.

``read_rules(folder)`` turns a CRS ``rules/`` folder's ``REQUEST-9*.conf`` files into ``SecRule``
objects (one per rule, its chained links in order) and the TX defaults that
REQUEST-901-INITIALIZATION sets. Parsing is syntax only; what a rule means (which variables an
access log has, which operators run) is decided in ``compile``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from log_analyser_core.errors import RulesError

REQUEST_FILES = "REQUEST-9*.conf"
_PL_GATE = re.compile(r"^TX:(?:DETECTION_PARANOIA_LEVEL|detection_paranoia_level)$")


@dataclass(frozen=True)
class Variable:
    """One element of a rule's target list: ``ARGS``, ``REQUEST_HEADERS:User-Agent``,
    ``!ARGS:foo`` (excluded), ``&TX:x`` (count) or a regex selector ``ARGS:/^id_/``."""

    collection: str          # upper case: ARGS, REQUEST_HEADERS, TX, ...
    key: str | None = None   # the selector after ':' as written (case kept), None for the whole collection
    exclude: bool = False
    count: bool = False

    @property
    def key_regex(self) -> str | None:
        """The selector's pattern when it is a /regex/, else None."""
        if self.key and len(self.key) > 1 and self.key.startswith("/") and self.key.endswith("/"):
            return self.key[1:-1]
        return None


@dataclass(frozen=True)
class Link:
    """One ``SecRule`` (a rule is one or more chained links)."""

    variables: tuple[Variable, ...]
    operator: str            # rx, pm, pmFromFile, streq, eq, ... (without '@')
    argument: str
    negated: bool
    transforms: tuple[str, ...]    # in order; 'none' already applied (it clears the ones before)
    actions: tuple[tuple[str, str], ...]   # (name, value) in order; value '' when there is none
    line: int

    def action(self, name: str) -> str | None:
        return next((v for k, v in self.actions if k == name), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.actions if k == name]


@dataclass(frozen=True)
class SecRule:
    """A rule: its first link carries id, message, tags and severity; ``links[1:]`` are the chain."""

    id: int
    file: str
    links: tuple[Link, ...]
    paranoia_level: int      # from the tag paranoia-level/N, else the PL gate the rule stands behind
    phase: int

    @property
    def first(self) -> Link:
        return self.links[0]

    @property
    def message(self) -> str:
        return self.first.action("msg") or ""

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.first.all("tag"))

    @property
    def severity(self) -> str:
        return (self.first.action("severity") or "").upper()

    @property
    def multi_match(self) -> bool:
        return any(k == "multiMatch" for k, _ in self.first.actions)


@dataclass(frozen=True)
class RuleFiles:
    rules: tuple[SecRule, ...]
    tx_defaults: dict[str, str] = field(default_factory=dict)   # lower-case tx name -> value (901)
    files: tuple[str, ...] = ()
    data_dir: Path | None = None


def read_rules(folder: Path) -> RuleFiles:
    """Every request rule of a CRS ``rules/`` folder (or a CRS root holding one)."""
    rules_dir = folder / "rules" if (folder / "rules").is_dir() else folder
    paths = sorted(rules_dir.glob(REQUEST_FILES))
    if not paths:
        raise RulesError(f"no {REQUEST_FILES} files in {folder}", hint="point --crs at a CRS release or its rules/")
    rules: list[SecRule] = []
    defaults: dict[str, str] = {}
    for path in paths:
        found, sets = _read_file(path)
        rules += found
        for name, value in sets:
            defaults.setdefault(name, value)
    return RuleFiles(rules=tuple(rules), tx_defaults=defaults, files=tuple(p.name for p in paths),
                     data_dir=rules_dir)


def directives(text: str) -> list[tuple[int, list[str]]]:
    """(line number, [directive, arg, ...]) for each directive, continuation lines joined."""
    out: list[tuple[int, list[str]]] = []
    buffer, start = "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1]
            continue
        buffer += stripped
        out.append((start, _split_args(buffer)))
        buffer = ""
    return out


_WORD = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)', re.S)


def _split_args(text: str) -> list[str]:
    """Whitespace-separated words, double-quoted ones with \\" as a quote inside (other escapes
    are the operator's and stay as written)."""
    return [bare or quoted.replace('\\"', '"') for quoted, bare in (m.groups("") for m in _WORD.finditer(text))]


def split_actions(text: str) -> tuple[tuple[str, str], ...]:
    """``id:1,msg:'a, b',t:none`` -> (('id', '1'), ('msg', 'a, b'), ('t', 'none'))."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == "'":
            quoted = not quoted
            current.append(ch)
        elif ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    actions = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        name, _, value = part.partition(":")
        value = value.strip()
        if len(value) >= 2 and value[0] == "'" and value[-1] == "'":
            value = value[1:-1]
        actions.append((name.strip(), value))
    return tuple(actions)


def split_variables(text: str) -> tuple[Variable, ...]:
    parts: list[str] = []
    current: list[str] = []
    in_regex = False
    for i, ch in enumerate(text):
        if ch == "/" and (in_regex or (i > 0 and text[i - 1] == ":")):
            in_regex = not in_regex
        if ch == "|" and not in_regex:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    variables = []
    for part in parts:
        exclude, count = part.startswith("!"), part.startswith("&")
        name = part.lstrip("!&")
        collection, _, key = name.partition(":")
        variables.append(Variable(collection.upper(), key or None, exclude, count))
    return tuple(variables)


def parse_link(words: list[str], line: int) -> Link:
    if len(words) < 3:
        raise ValueError("a SecRule needs variables, an operator and actions")
    operator_text = words[2]
    negated = operator_text.startswith("!")
    operator_text = operator_text.lstrip("!")
    if operator_text.startswith("@"):
        name, _, argument = operator_text[1:].partition(" ")
    else:   # no operator: @rx is implied
        name, argument = "rx", operator_text
    actions = split_actions(words[3]) if len(words) > 3 else ()
    transforms: list[str] = []
    for key, value in actions:
        if key == "t":
            transforms = [] if value.lower() == "none" else [*transforms, value]
    return Link(split_variables(words[1]), name, argument, negated, tuple(transforms), actions, line)


def _read_file(path: Path) -> tuple[list[SecRule], list[tuple[str, str]]]:
    """The file's rules, and the tx values its SecActions and default-setting rules set."""
    text = path.read_text(encoding="utf-8")
    rules: list[SecRule] = []
    sets: list[tuple[str, str]] = []
    gate_level = 1
    pending: list[Link] = []
    for line, words in directives(text):
        directive = words[0]
        try:
            if directive == "SecAction":
                actions = split_actions(words[1]) if len(words) > 1 else ()
                sets += _setvars(actions)
                continue
            if directive != "SecRule":
                continue
            link = parse_link(words, line)
        except (ValueError, IndexError) as error:
            raise RulesError(f"{path.name}:{line}: {error}", path=str(path)) from None
        if not pending and _is_gate(link):
            gate_level = int(link.argument) if link.argument.isdigit() else gate_level
            continue
        pending.append(link)
        if any(k == "chain" for k, _ in link.actions):
            continue
        first = pending[0]
        if first.action("id") is None:
            raise RulesError(f"{path.name}:{first.line}: a SecRule without an id", path=str(path))
        sets += _default_sets(pending)
        rules.append(SecRule(id=int(first.action("id") or 0), file=path.name, links=tuple(pending),
                             paranoia_level=_level(first, gate_level), phase=int(first.action("phase") or 2)))
        pending = []
    return rules, sets


def _is_gate(link: Link) -> bool:
    """``SecRule TX:DETECTION_PARANOIA_LEVEL "@lt N" "...skipAfter:END-..."``: rules after it are PL N."""
    return (len(link.variables) == 1 and bool(_PL_GATE.match(f"TX:{link.variables[0].key}"))
            and link.variables[0].collection == "TX" and link.operator == "lt" and link.action("skipAfter") is not None)


def _level(link: Link, gate_level: int) -> int:
    for tag in link.all("tag"):
        if tag.startswith("paranoia-level/") and tag[15:].isdigit():
            return int(tag[15:])
    return gate_level


def _setvars(actions: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    out = []
    for key, value in actions:
        if key == "setvar" and "=" in value and value.lower().startswith("tx."):
            name, _, assigned = value.partition("=")
            if not assigned.startswith(("+", "-")):
                out.append((name[3:].lower(), assigned))
    return out


def _default_sets(links: list[Link]) -> list[tuple[str, str]]:
    """901's ``SecRule &TX:x "@eq 0" "setvar:tx.x=..."``: defaults for settings crs-setup leaves unset."""
    first = links[0]
    if len(links) == 1 and first.operator == "eq" and first.argument == "0" and first.variables \
            and first.variables[0].count and first.variables[0].collection == "TX":
        return _setvars(first.actions)
    return []

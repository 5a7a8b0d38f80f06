"""Compile a pySigma condition tree into one Polars boolean expression over the events table.

The Sigma webserver taxonomy is mapped onto file_parser.EVENT_SCHEMA columns by ``FIELDS`` (data,
declared once). URL-encoded fields are matched twice, as logged and URL-decoded, and a value
matches when either form does, so ``..%2f`` is caught by a rule that says ``../`` and a rule that
looks for ``%2e%2e`` still sees the bytes that were sent. Sigma strings match case-insensitively
(``|cased`` makes them exact); ``|re`` is case-sensitive unless the rule sets ``|i``.

A feature this engine cannot evaluate raises ``Unsupported`` naming it; the caller reports the
rule as skipped. Expressions read derived columns (``views``) that ``view_columns`` computes once.
"""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import cast

import polars as pl
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SpecialChars,
)

from log_analyser_core.rules.sigma_views import (  # noqa: F401  (re-exported: the taxonomy is part of the compiler's API)
    DERIVED,
    ENCODING_MARKS,
    FIELDS,
    KEYWORDS,
    Field,
    source_columns,
    url_decode,
    view_columns,
)


class Unsupported(Exception):
    """A Sigma feature this engine does not evaluate; the message names it."""


@dataclass
class Compiler:
    """Turns one rule's condition tree into an expression; ``views`` collects the derived
    columns the expression reads. ``columns`` is the set of columns the events table has."""

    columns: frozenset[str]
    views: set[str]
    fields: set[str] = dataclasses.field(default_factory=set)   # Sigma field names read

    def compile(self, node) -> pl.Expr:
        if isinstance(node, ConditionAND):
            return functools.reduce(lambda a, b: a & b, [self.compile(a) for a in node.args])
        if isinstance(node, ConditionOR):
            return self._or(node.args)
        if isinstance(node, ConditionNOT):
            return ~self.compile(node.args[0])
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self.leaf(node.field, node.value)
        if isinstance(node, ConditionValueExpression):
            return self.leaf(None, node.value)
        raise Unsupported(f"condition element {type(node).__name__}")

    def _or(self, args) -> pl.Expr:
        """OR of the arguments; plain substring tests on one field become one multi-pattern search."""
        groups: dict[tuple[str | None, bool], list[str]] = {}
        rest = []
        for arg in args:
            plain = self._substring(arg)
            if plain is None:
                rest.append(self.compile(arg))
            else:
                groups.setdefault(plain[:2], []).append(plain[2])
        rest += [self._contains(field, patterns, cased) for (field, cased), patterns in groups.items()]
        return functools.reduce(lambda a, b: a | b, rest)

    @staticmethod
    def _substring(node) -> tuple[str | None, bool, str] | None:
        """(field, cased, text) when ``node`` is a plain 'contains' test, else None."""
        if isinstance(node, ConditionFieldEqualsValueExpression):
            field, value = node.field, node.value
        elif isinstance(node, ConditionValueExpression):
            field, value = None, node.value
        else:
            return None
        if isinstance(value, SigmaNumber):
            value = SigmaString(str(value))
        if not isinstance(value, SigmaString) or value.contains_placeholder():
            return None
        shape = _shape(value, keyword=field is None)
        if shape is None or shape[0] != "contains":
            return None
        return field, isinstance(value, SigmaCasedString), shape[1]

    def field(self, name: str | None) -> Field:
        self.fields.add(KEYWORDS if name is None else name)
        field = FIELDS.get(KEYWORDS if name is None else name)
        if field is None:
            raise Unsupported(f"field '{name}' (no column of the parsed log maps to it)")
        missing = [c for c in source_columns(field.column) if c not in self.columns]
        if missing:
            raise Unsupported(f"field '{name}' (the parsed log has no {', '.join(missing)} column)")
        return field

    def view(self, field: Field, kind: str = "", lower: bool = False) -> pl.Expr:
        name = field.column + (f":{kind}" if kind else "")
        self.views.add(name)
        if lower:
            name += ":low"
            self.views.add(name)
        return pl.col(name)

    def forms(self, field: Field, lower: bool) -> list[pl.Expr]:
        """The field as logged and, for URL-encoded fields, decoded."""
        kinds = ["", "dec"] if field.encoded else [""]
        return [self.view(field, kind, lower) for kind in kinds]

    def _contains(self, name: str | None, patterns: list[str], cased: bool) -> pl.Expr:
        """Any of ``patterns`` as a substring: one regex alternation of literals. Case-insensitive
        tests search the lower-cased view for lower-cased literals, which the regex engine's
        literal search does several times faster than a (?i) pattern or Aho-Corasick."""
        field = self.field(name)
        target = self.view(field, "any" if field.encoded else "", lower=not cased)
        texts = patterns if cased else [p.lower() for p in patterns]
        return target.str.contains("|".join(rx_escape(p) for p in dict.fromkeys(texts))).fill_null(False)

    def leaf(self, name: str | None, value) -> pl.Expr:
        if isinstance(value, SigmaExpansion):
            return self._or([ConditionFieldEqualsValueExpression(name, v) if name else ConditionValueExpression(v)
                             for v in value.values])
        if isinstance(value, SigmaNumber):
            value = SigmaString(str(value))
        if isinstance(value, SigmaString):
            return self._string(name, value)
        if name is None:
            raise Unsupported(f"keyword of type {type(value).__name__}")
        return self._typed(name, value)

    def _typed(self, name: str, value) -> pl.Expr:
        field = self.field(name)
        column = self.view(field)
        if isinstance(value, SigmaNull):
            return column.is_null() | (column == "")
        if isinstance(value, SigmaExists):
            return column.is_not_null() if bool(value) else column.is_null()
        if isinstance(value, SigmaRegularExpression):
            return self._regex(field, value)
        if isinstance(value, SigmaCIDRExpression):
            return _cidr(column, value.network)
        if isinstance(value, SigmaCompareExpression):
            return _compare(column.cast(pl.Float64, strict=False), value)
        if isinstance(value, SigmaFieldReference):
            return self._fieldref(field, value)
        raise Unsupported(f"value type {type(value).__name__} on field '{name}'")

    def _string(self, name: str | None, value: SigmaString) -> pl.Expr:
        if value.contains_placeholder():
            raise Unsupported("placeholders (the expand modifier)")
        field = self.field(name)
        cased = isinstance(value, SigmaCasedString)
        shape = _shape(value, keyword=name is None)
        if shape is None:
            pattern = _wildcard_regex(value, anchored=name is not None, lower=not cased)
            if pattern.startswith("^") or pattern.endswith("$"):
                return _any_of([c.str.contains(pattern) for c in self.forms(field, lower=not cased)])
            # unanchored: one search of the as-sent + decoded view ('.' never crosses its newline)
            target = self.view(field, "any" if field.encoded else "", lower=not cased)
            return target.str.contains(pattern).fill_null(False)
        kind, text = shape
        if kind == "contains":
            return self._contains(name, [text], cased)
        text = text if cased else text.lower()
        tests = {"equals": lambda c: c == text, "startswith": lambda c: c.str.starts_with(text),
                 "endswith": lambda c: c.str.ends_with(text)}[kind]
        return _any_of([tests(c) for c in self.forms(field, lower=not cased)])

    def _regex(self, field: Field, value: SigmaRegularExpression) -> pl.Expr:
        flags = "".join(sorted(SigmaRegularExpression.sigma_to_re_flag[f] for f in value.flags))
        pattern = (f"(?{flags})" if flags else "") + str(value.regexp)
        return self._regex_text(field, pattern)

    def _regex_text(self, field: Field, pattern: str) -> pl.Expr:
        try:
            pl.Series([""]).str.contains(pattern)
        except pl.exceptions.ComputeError as exc:
            raise Unsupported(f"regular expression {pattern!r} (not valid in the Rust regex dialect: "
                              f"{str(exc).splitlines()[0][:80]})") from None
        return _any_of([c.str.contains(pattern) for c in self.forms(field, lower=False)])

    def _fieldref(self, field: Field, value: SigmaFieldReference) -> pl.Expr:
        if value.starts_with or value.ends_with:
            raise Unsupported("fieldref with startswith/endswith")
        other = self.field(value.field)
        return (self.view(field, lower=True) == self.view(other, lower=True)).fill_null(False)


def rx_escape(text: str) -> str:
    """``text`` as a literal in the Rust regex dialect (the characters its ``regex::escape`` escapes)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$#&\-~])", r"\\\1", text)


def _any_of(tests: list[pl.Expr]) -> pl.Expr:
    return functools.reduce(lambda a, b: a | b, [t.fill_null(False) for t in tests])


def _shape(value: SigmaString, keyword: bool) -> tuple[str, str] | None:
    """('equals'|'startswith'|'endswith'|'contains', text) for strings whose only wildcards are a
    leading and/or trailing '*'; None when the value needs a regex. Keywords are substrings."""
    parts = list(value.s)
    lead = bool(parts) and parts[0] == SpecialChars.WILDCARD_MULTI
    trail = len(parts) > 1 and parts[-1] == SpecialChars.WILDCARD_MULTI
    middle = parts[int(lead):len(parts) - int(trail)]
    if any(not isinstance(p, str) for p in middle):
        return None
    text = "".join(cast(list[str], middle))  # only literal text is left in the middle
    if keyword or (lead and trail):
        return "contains", text
    return ("endswith" if lead else "startswith" if trail else "equals"), text


def _wildcard_regex(value: SigmaString, anchored: bool, lower: bool) -> str:
    """A value with inner wildcards as a regex (literal parts lower-cased for lower-cased views)."""
    parts = cast(list[str | SpecialChars], list(value.s))  # the caller rejects placeholders
    head = anchored and not (parts and parts[0] == SpecialChars.WILDCARD_MULTI)
    tail = anchored and not (parts and parts[-1] == SpecialChars.WILDCARD_MULTI)
    while parts and parts[0] == SpecialChars.WILDCARD_MULTI:
        parts.pop(0)
    while parts and parts[-1] == SpecialChars.WILDCARD_MULTI:
        parts.pop()
    body = "".join(".*" if p == SpecialChars.WILDCARD_MULTI else "." if p == SpecialChars.WILDCARD_SINGLE
                   else rx_escape(p.lower() if lower else p) for p in parts)
    return ("^" if head else "") + body + ("$" if tail else "")


def _cidr(column: pl.Expr, network) -> pl.Expr:
    """Client address in ``network``: IPv4 compared as integers, IPv6 by its textual prefixes."""
    if isinstance(network, ipaddress.IPv4Network):
        octets = column.str.extract_groups(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
        number = functools.reduce(lambda a, b: a * 256 + b, [
            octets.struct.field(str(i)).cast(pl.Int64, strict=False) for i in range(1, 5)])
        first, last = int(network.network_address), int(network.broadcast_address)
        return number.is_between(first, last).fill_null(False)
    prefixes = [p.rstrip("*").lower() for p in SigmaCIDRExpression(str(network)).expand()]
    return _any_of([column.str.to_lowercase().str.starts_with(p) for p in prefixes])


def _compare(number: pl.Expr, value: SigmaCompareExpression) -> pl.Expr:
    ops = SigmaCompareExpression.CompareOperators
    limit = value.number.number
    test = {ops.LT: number < limit, ops.LTE: number <= limit, ops.GT: number > limit,
            ops.GTE: number >= limit, ops.NEQ: number != limit}[value.op]
    return test.fill_null(False)

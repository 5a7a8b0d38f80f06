"""ModSecurity operators: as Polars expressions over a column of (transformed) distinct values,
and as plain predicates on one string for chained links evaluated per request.

``@rx`` runs on Polars' regex engine (Rust ``regex``: CRS v4's patterns are written to be
RE2-compatible); a pattern it does not compile falls back to Python's ``regex`` per distinct
value. ``@pm``/``@pmFromFile`` are ``str.contains_any`` (Aho-Corasick, ASCII case-insensitive,
as ModSecurity's are). ``@detectSQLi``/``@detectXSS`` call libinjection per distinct value.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import regex

SUPPORTED = frozenset({"rx", "pm", "pmfromfile", "pmf", "contains", "beginswith", "endswith", "streq", "within",
                       "eq", "ne", "lt", "le", "gt", "ge", "detectsqli", "detectxss", "validateurlencoding",
                       "validateutf8encoding", "validatebyterange", "unconditionalmatch", "nomatch",
                       "containsword"})
_NUMERIC = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
            "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}
_BAD_PERCENT = re.compile(r"%(?![0-9a-fA-F]{2})")


@dataclass(frozen=True)
class Operator:
    """A compiled operator: ``column(expr)`` a Boolean expression, ``one(text)`` the same on one
    string. ``argument`` is already macro-expanded."""

    name: str
    argument: str
    negated: bool
    phrases: tuple[str, ...] = ()
    polars_regex: bool = True      # False: @rx did not compile in Polars; Python regex instead

    def column(self, expr: pl.Expr) -> pl.Expr:
        matched = self._column(expr)
        return ~matched if self.negated else matched

    def one(self, text: str) -> bool:
        return self._one(text) != self.negated

    def _column(self, expr: pl.Expr) -> pl.Expr:   # noqa: PLR0911 - one branch per operator
        name, arg = self.name, self.argument
        if name == "rx" and self.polars_regex:
            return expr.str.contains(ascii_classes(arg))
        if name in ("pm", "pmfromfile", "pmf"):
            if not self.phrases:
                return pl.lit(False)
            return expr.str.contains_any(list(self.phrases), ascii_case_insensitive=True)
        if name == "contains":
            return expr.str.contains(arg, literal=True)
        if name == "beginswith":
            return expr.str.starts_with(arg)
        if name == "endswith":
            return expr.str.ends_with(arg)
        if name == "streq":
            return expr == arg
        if name in _NUMERIC:
            return _NUMERIC[name](_number(expr), _int(arg))
        if name == "unconditionalmatch":
            return pl.lit(True)
        if name == "nomatch":
            return pl.lit(False)
        return expr.map_elements(self._one, return_dtype=pl.Boolean, skip_nulls=True)

    def _one(self, text: str) -> bool:   # noqa: PLR0911
        name, arg = self.name, self.argument
        if name == "rx":
            return python_regex(arg).search(text) is not None
        if name in ("pm", "pmfromfile", "pmf"):
            low = text.lower()
            return any(p.lower() in low for p in self.phrases)
        if name == "contains":
            return arg in text
        if name == "containsword":
            return re.search(rf"(?<!\w){re.escape(arg)}(?!\w)", text) is not None
        if name == "beginswith":
            return text.startswith(arg)
        if name == "endswith":
            return text.endswith(arg)
        if name == "streq":
            return text == arg
        if name == "within":
            return bool(text) and text in arg
        if name in _NUMERIC:
            return bool(_NUMERIC[name](_int(text), _int(arg)))
        return _SPECIAL[name](text, self)


def _int(text: str) -> int:
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


def _number(expr: pl.Expr) -> pl.Expr:
    return expr.str.extract(r"^\s*([+-]?\d+)", 1).cast(pl.Int64, strict=False).fill_null(0)


@functools.lru_cache(maxsize=1024)
def python_regex(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern, regex.V0 | regex.ASCII)   # PCRE's \w \d \s \b are ASCII


def _detect_sqli(text: str, _: Operator) -> bool:
    import libinjection

    return bool(libinjection.is_sql_injection(text)["is_sqli"])


def _detect_xss(text: str, _: Operator) -> bool:
    import libinjection

    return bool(libinjection.is_xss(text)["is_xss"])


def _byte_range(text: str, op: Operator) -> bool:
    """True when a byte of ``text`` (UTF-8) lies outside the ranges of the argument."""
    allowed = _ranges(op.argument)
    raw = b"".join(bytes([ord(c) - 0xF700]) if 0xF780 <= ord(c) <= 0xF7FF else c.encode("utf-8") for c in text)
    return any(b not in allowed for b in raw)


@functools.lru_cache(maxsize=64)
def _ranges(argument: str) -> frozenset[int]:
    allowed: set[int] = set()
    for part in argument.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            allowed.update(range(int(low), int(high or low) + 1))
    return frozenset(allowed)


_SPECIAL: dict[str, Callable[[str, Operator], bool]] = {
    "detectsqli": _detect_sqli,
    "detectxss": _detect_xss,
    "validateurlencoding": lambda text, _: _BAD_PERCENT.search(text) is not None,
    # bytes that are not UTF-8 were kept as private-use characters (transforms.decode_bytes)
    "validateutf8encoding": lambda text, _: re.search("[\uf780-\uf7ff]", text) is not None,
    "validatebyterange": _byte_range,
    "unconditionalmatch": lambda text, _: True,
    "nomatch": lambda text, _: False,
}


def phrases_from_files(argument: str, folder: Path) -> tuple[str, ...]:
    """The phrases of the ``.data`` files named in a @pmFromFile argument (comments and blank
    lines left out)."""
    out: list[str] = []
    for name in argument.split():
        path = folder / name
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return tuple(out)


_CLASS_OUTSIDE = {"w": "[0-9A-Z_a-z]", "d": "[0-9]", "s": "[\\t\\n\\x0b\\f\\r ]", "W": "[^0-9A-Z_a-z]",
                  "D": "[^0-9]", "S": "[^\\t\\n\\x0b\\f\\r ]", "b": "(?-u:\\b)", "B": "(?-u:\\B)"}
_CLASS_INSIDE = {"w": "0-9A-Z_a-z", "d": "0-9", "s": "\\t\\n\\x0b\\f\\r "}


@functools.lru_cache(maxsize=1024)
def ascii_classes(pattern: str) -> str:
    """``\\w \\d \\s \\b`` with PCRE's ASCII meaning (Rust's are Unicode): what ModSecurity
    matches, and the regexes compile in about half the time."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            table = _CLASS_INSIDE if in_class else _CLASS_OUTSIDE
            out.append(table.get(nxt, ch + nxt))
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            out.append(ch)
            i += 1
            if pattern[i:i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i:i + 1] == "]":   # a leading ']' is a literal
                out.append("\\]")
                i += 1
            continue
        if ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


def polars_compiles(pattern: str) -> bool:
    try:
        pl.select(pl.lit("x").str.contains(ascii_classes(pattern)))
    except pl.exceptions.ComputeError:
        return False
    return True

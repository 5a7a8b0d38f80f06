"""ModSecurity transformations, twice: as Polars expressions over a column of distinct values
(``column``), and as plain functions on one string (``one``) for the few chained links that
are evaluated per request. A test checks that both give the same result.

The decoders that Polars has no kernel for (URL, HTML entity, JavaScript and CSS escapes,
paths) run in Python, but only on the distinct values that hold the character they decode
(``%``, ``&``, ``\\``, ``/.``): most values pass through untouched.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable

import polars as pl

_HEX = "0123456789abcdefABCDEF"
_WHITESPACE = r"[\s\x0b\xa0]"   # ModSecurity's isspace plus the no-break space it also removes


# Bytes that are not UTF-8 (``%c0%af``, an overlong '/') are kept as private-use characters
# U+F780-U+F7FF (byte 0x80-0xFF), so that a column stays valid UTF-8 and the byte is not lost.
RAW_BYTE = 0xF700


def decode_bytes(raw: bytes | bytearray) -> str:
    """UTF-8 where it is valid; each other byte as the character RAW_BYTE + byte."""
    text = bytes(raw).decode("utf-8", "surrogateescape")
    if text.isascii() or not re.search("[\udc80-\udcff]", text):
        return text
    return re.sub("[\udc80-\udcff]", lambda m: chr(ord(m.group()) - 0xDC00 + RAW_BYTE), text)


_URL_ESCAPE = re.compile(r"((?:%[0-9a-fA-F]{2})+)|%[uU]([0-9a-fA-F]{4})|\+")


def _url_piece(m: re.Match[str]) -> str:
    if m.group(1):
        return decode_bytes(bytes.fromhex(m.group(1).replace("%", "")))
    if m.group(2):
        code = int(m.group(2), 16)
        # ModSecurity maps %uFFxx full-width forms to ASCII and keeps the low byte otherwise
        return chr(code - 0xFEE0) if 0xFF01 <= code <= 0xFF5E else _byte_char(code)
    return " "


def url_decode_uni(text: str) -> str:
    """``%XX`` and IIS ``%uXXXX`` decoded, ``+`` to space; an invalid escape stays as written."""
    if "%" not in text and "+" not in text:
        return text
    return _URL_ESCAPE.sub(_url_piece, text)


def _byte_char(code: int) -> str:
    """One byte as ModSecurity writes it: ASCII as is, 0x80-0xFF as a raw-byte character."""
    code &= 0xFF
    return chr(code) if code < 0x80 else chr(RAW_BYTE + code)


_ENTITY = re.compile(r"&(?:#[xX]([0-9a-fA-F]{1,8})|#([0-9]{1,10})|(quot|nbsp|lt|gt|amp));?", re.I)
_NAMED = {"quot": '"', "nbsp": chr(RAW_BYTE + 0xA0), "lt": "<", "gt": ">", "amp": "&"}


def html_entity_decode(text: str) -> str:
    """ModSecurity's htmlEntityDecode: numeric entities (one byte each) and &quot; &nbsp; &lt;
    &gt; &amp;, the semicolon optional; other named entities stay as written."""
    if "&" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return _byte_char(int(m.group(1)[-2:], 16))
        if m.group(2):
            return _byte_char(int(m.group(2)) & 0xFF)
        return _NAMED[m.group(3).lower()]
    return _ENTITY.sub(one, text)


_JS = re.compile(r"\\(?:u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|([0-7]{1,3})|(.))", re.S)
_JS_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def js_decode(text: str) -> str:
    if "\\" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            code = int(m.group(1), 16)
            return chr(code - 0xFEE0) if 0xFF01 <= code <= 0xFF5E else chr(code & 0xFF)
        if m.group(2):
            return chr(int(m.group(2), 16))
        if m.group(3):
            return chr(int(m.group(3), 8) & 0xFF)
        return _JS_SIMPLE.get(m.group(4), m.group(4))
    return _JS.sub(one, text)


_CSS = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\r\f]?|(\n|\Z)|(.))", re.S)


def css_decode(text: str) -> str:
    if "\\" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            code = int(m.group(1), 16)
            return chr(code - 0xFEE0) if 0xFF01 <= code <= 0xFF5E else chr(code & 0xFF)
        return "" if m.group(2) else m.group(3)
    return _CSS.sub(one, text)


_ESC = re.compile(r"\\(?:x([0-9a-fA-F]{2})|([0-7]{1,3})|(.))", re.S)
_ESC_SIMPLE = {**_JS_SIMPLE, "?": "?", "'": "'", '"': '"', "\\": "\\"}


def escape_seq_decode(text: str) -> str:
    if "\\" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return chr(int(m.group(1), 16))
        if m.group(2):
            return chr(int(m.group(2), 8) & 0xFF)
        return _ESC_SIMPLE.get(m.group(3), m.group(3))   # an unknown escape loses its backslash
    return _ESC.sub(one, text)


def normalize_path(text: str, windows: bool = False) -> str:
    """Remove ``./`` segments, resolve ``../`` against the segments before, collapse ``//``."""
    if windows:
        text = text.replace("\\", "/")
    if "/." not in text and "//" not in text and "../" not in text and not text.startswith("."):
        return text
    if text.endswith("/.") and len(text) > 2:   # ModSecurity drops a trailing '/.' first
        text = text[:-2]
    # and reads 'x../' as 'x/../': the '..' climbs even without a slash before it
    text = re.sub(r"(?<=[^/])\.\.(?=/)", "/..", text)
    absolute = text.startswith("/")
    trailing = text.endswith("/")   # ModSecurity drops a trailing '/.' with its slash
    parts: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append("..")
            continue
        parts.append(segment)
    out = ("/" if absolute else "") + "/".join(parts)
    if trailing and parts:
        out += "/"
    return out


_OVERLONG = re.compile("([\uf7c0-\uf7df])([\uf780-\uf7bf])|([\uf7e0-\uf7ef])([\uf780-\uf7bf])([\uf780-\uf7bf])")


def utf8_to_unicode(text: str) -> str:
    """Non-ASCII characters as %uXXXX; raw byte sequences that UTF-8 decodes only leniently
    (overlong forms such as c0 af for '/') too, as ModSecurity does; ModSecurity 3 also drops
    NUL characters here (``<%00>`` reads ``<>``)."""
    text = text.replace("\x00", "")
    if text.isascii():
        return text

    def overlong(m: re.Match[str]) -> str:
        b = [ord(c) - RAW_BYTE for c in m.groups() if c]
        code = ((b[0] & 0x1F) << 6 | b[1] & 0x3F) if len(b) == 2 else \
            ((b[0] & 0x0F) << 12 | (b[1] & 0x3F) << 6 | b[2] & 0x3F)
        return f"%u{code:04x}"
    text = _OVERLONG.sub(overlong, text)
    return "".join(c if ord(c) < 0x80 or RAW_BYTE + 0x80 <= ord(c) <= RAW_BYTE + 0xFF else f"%u{ord(c):04x}"
                   for c in text)


def base64_decode(text: str) -> str:
    """The decoded bytes (one character each, as Latin-1); text that is not base64 stays as it is,
    as in ModSecurity."""
    try:
        return base64.b64decode(text, validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return text


def cmd_line(text: str) -> str:
    """ModSecurity's cmdLine: drop \\ " ' ^, commas and semicolons become spaces, runs of
    whitespace one space, no space before / or (, lower case."""
    text = re.sub(r"[\\\"'^]", "", text)
    text = re.sub(r"[\s,;]+", " ", text)
    text = re.sub(r" (?=[/(])", "", text)
    return text.lower()


def replace_comments(text: str) -> str:
    return re.sub(r"/\*.*?(?:\*/|\Z)", " ", text, flags=re.S)


def remove_comments_char(text: str) -> str:
    return re.sub(r"/\*|\*/|--|#", "", text)


ONE: dict[str, Callable[[str], str]] = {
    "lowercase": lambda s: s.lower(),
    "urldecodeuni": url_decode_uni,
    "urldecode": url_decode_uni,
    "htmlentitydecode": html_entity_decode,
    "jsdecode": js_decode,
    "cssdecode": css_decode,
    "escapeseqdecode": escape_seq_decode,
    "utf8tounicode": utf8_to_unicode,
    "removenulls": lambda s: s.replace("\x00", ""),
    "removewhitespace": lambda s: re.sub(_WHITESPACE, "", s),
    "compresswhitespace": lambda s: re.sub(_WHITESPACE + "+", " ", s),
    "cmdline": cmd_line,
    "replacecomments": replace_comments,
    "removecommentschar": remove_comments_char,
    "normalizepath": normalize_path,
    "normalisepath": normalize_path,
    "normalizepathwin": lambda s: normalize_path(s, windows=True),
    "normalisepathwin": lambda s: normalize_path(s, windows=True),
    "length": lambda s: str(len(s.encode("utf-8"))),
    "base64decode": base64_decode,
    "hexencode": lambda s: s.encode("utf-8").hex(),
    "hexdecode": lambda s: bytes.fromhex(s).decode("latin-1") if re.fullmatch(r"(?:[0-9a-fA-F]{2})*", s) else s,
    "sha1": lambda s: hashlib.sha1(s.encode("utf-8")).digest().decode("latin-1"),   # noqa: S324 - CRS's own
    "trim": lambda s: s.strip(),
}

# Which characters a Python decoder acts on: values without one pass through untouched.
_TRIGGER = {"urldecodeuni": "[%+]", "urldecode": "[%+]", "htmlentitydecode": "&", "jsdecode": r"\\",
            "cssdecode": r"\\", "escapeseqdecode": r"\\", "utf8tounicode": r"[^\x01-\x7f]",
            "normalizepath": r"/\.|//|^\.|\.\./", "normalisepath": r"/\.|//|^\.|\.\./",
            "normalizepathwin": r"\\|/\.|//|^\.|\.\./", "normalisepathwin": r"\\|/\.|//|^\.|\.\./"}


def _python_on(name: str) -> Callable[[pl.Expr], pl.Expr]:
    """The Python decoder as an expression that calls it only on the values holding its trigger."""
    function = ONE[name]
    trigger = _TRIGGER.get(name)

    def batch(values: pl.Series) -> pl.Series:
        mask = values.str.contains(trigger).fill_null(False) if trigger else values.is_not_null()
        if not mask.any():
            return values
        changed = pl.Series([function(v) for v in values.filter(mask).to_list()], dtype=pl.String)
        return values.cast(pl.String).scatter(mask.arg_true(), changed)

    return lambda expr: expr.map_batches(batch, return_dtype=pl.String, is_elementwise=True)


COLUMN: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "lowercase": lambda e: e.str.to_lowercase(),
    "removenulls": lambda e: e.str.replace_all("\x00", "", literal=True),
    "removewhitespace": lambda e: e.str.replace_all(_WHITESPACE, ""),
    "compresswhitespace": lambda e: e.str.replace_all(_WHITESPACE + "+", " "),
    "cmdline": lambda e: e.str.replace_all(r"[\\\"'^]", "").str.replace_all(r"[\s,;]+", " ")
                          .str.replace_all(r" ([/(])", "$1").str.to_lowercase(),
    "replacecomments": lambda e: e.str.replace_all(r"(?s)/\*.*?(?:\*/|$)", " "),
    "removecommentschar": lambda e: e.str.replace_all(r"/\*|\*/|--|#", ""),
    "length": lambda e: e.str.len_bytes().cast(pl.String),
    "trim": lambda e: e.str.strip_chars(),
}


def known(name: str) -> bool:
    return name.lower() in ONE


def column(expr: pl.Expr, chain: tuple[str, ...]) -> pl.Expr:
    """``expr`` (a String column) with each transformation of ``chain`` applied in order."""
    for name in chain:
        key = name.lower()
        expr = COLUMN[key](expr) if key in COLUMN else _python_on(key)(expr)
    return expr


def one(text: str, chain: tuple[str, ...]) -> str:
    for name in chain:
        text = ONE[name.lower()](text)
    return text

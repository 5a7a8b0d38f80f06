"""Log formats as data: named presets and compilers from format descriptions to one regex.

Three kinds of description compile to an anchored regex with named groups, applied to whole
columns by :mod:`file_parser` (nothing here touches a line):

* an Apache ``LogFormat`` string (``%h %l %u %t "%r" ...``) or an nginx ``log_format`` string
  (``$remote_addr - $remote_user ...``), exactly as users have them in their server config;
* a field template (``{time_iso} {client_ip}:{-} ...``) for formats that have no config string
  (cloud load balancers, S3, Squid);
* a header line, for W3C extended logs (``#Fields: date time c-ip ...``) and CSV exports.

JSON-lines formats are a mapping from event fields to JSON paths instead of a regex.
Group names are canonical event columns (see ``file_parser.EVENT_SCHEMA``) or raw helper groups
(``time_*``, ``request``, ``target``, ``query_raw``, ``request_time_*``, ``hdr_*``) that the
parser converts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from log_analyser_core.errors import ConfigError
from log_analyser_core.parsing.presets import CSV_COLUMNS, JSON_FIELDS, PRESETS, W3C_FIELDS, Preset

# A quoted field's body with Apache/nginx backslash escapes, as an unrolled loop: about 1.6x
# faster than the equivalent alternation (?:[^"\\]|\\.)* in Polars' regex engine.
QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
CSV_CELL = r'(?:"(?:[^"]|"")*"|[^,"]*)'
CSV_LOOSE_CELL = r'(?:".*"|[^,]*)'
NON_SPACE = r"\S+"
ADDRESS = r'[^\s"]+'
# Real-client headers a format may log; file_parser picks one with --real-ip-header.
REAL_IP_HEADERS = {"x-forwarded-for": "hdr_x_forwarded_for", "cf-connecting-ip": "hdr_cf_connecting_ip",
                   "x-real-ip": "hdr_x_real_ip"}


@dataclass(frozen=True)
class Directive:
    """What one format directive captures: an event column (or None to skip) and its pattern."""

    group: str | None
    pattern: str = NON_SPACE


# Apache mod_log_config directives (the common subset real configs use).
APACHE = {
    "h": Directive("client_ip", ADDRESS), "a": Directive("client_ip", ADDRESS),
    "{c}a": Directive("client_ip", ADDRESS),
    "l": Directive(None), "u": Directive(None), "p": Directive(None), "P": Directive(None),
    "k": Directive(None), "X": Directive(None), "I": Directive(None), "S": Directive(None),
    "A": Directive(None), "R": Directive(None), "f": Directive(None), "L": Directive(None),
    "t": Directive("time_clf", r"\[[^\]]*\]"),
    "r": Directive("request", QUOTED),
    ">s": Directive("status", r"\d{3}|-"), "s": Directive("status", r"\d{3}|-"),
    "b": Directive("bytes", r"\d+|-"), "B": Directive("bytes", r"\d+"), "O": Directive("bytes", r"\d+|-"),
    "D": Directive("request_time_us", r"\d+|-"), "T": Directive("request_time_s", r"\d+|-"),
    "{ms}T": Directive("request_time_ms", r"\d+|-"), "{us}T": Directive("request_time_us", r"\d+|-"),
    "{s}T": Directive("request_time_s", r"\d+|-"),
    "v": Directive("vhost", r"[^\s:]+"), "V": Directive("vhost", r"[^\s:]+"),
    "m": Directive("method"), "U": Directive("path"), "q": Directive("query_raw", r"\S*"),
    "H": Directive("protocol"),
    "{Referer}i": Directive("referer", QUOTED), "{User-Agent}i": Directive("user_agent", QUOTED),
    "{Host}i": Directive("vhost"),
    "{X-Forwarded-For}i": Directive("hdr_x_forwarded_for", r"[^\s\"]+(?:, [^\s\"]+)*"),
    "{CF-Connecting-IP}i": Directive("hdr_cf_connecting_ip", ADDRESS),
    "{X-Real-IP}i": Directive("hdr_x_real_ip", ADDRESS),
}

# nginx variables (ngx_http_log_module and the core module's request variables).
NGINX = {
    "remote_addr": Directive("client_ip", ADDRESS), "realip_remote_addr": Directive(None),
    "remote_user": Directive(None), "remote_port": Directive(None), "connection": Directive(None),
    "connection_requests": Directive(None), "pipe": Directive(None), "msec": Directive(None),
    "request_length": Directive(None), "gzip_ratio": Directive(None),
    "time_local": Directive("time_clf", r"[^\]]*"),
    "time_iso8601": Directive("time_iso", NON_SPACE),
    "request": Directive("request", QUOTED),
    "status": Directive("status", r"\d{3}|-"),
    "body_bytes_sent": Directive("bytes", r"\d+|-"), "bytes_sent": Directive("bytes", r"\d+|-"),
    "http_referer": Directive("referer", QUOTED), "http_user_agent": Directive("user_agent", QUOTED),
    "request_time": Directive("request_time_s", r"[\d.]+|-"),
    "host": Directive("vhost"), "server_name": Directive("vhost"), "http_host": Directive("vhost"),
    "request_method": Directive("method"), "request_uri": Directive("target"), "uri": Directive("path"),
    "args": Directive("query_raw", r"\S*"), "query_string": Directive("query_raw", r"\S*"),
    "server_protocol": Directive("protocol"),
    "http_x_forwarded_for": Directive("hdr_x_forwarded_for", r"[^\s\"]+(?:, [^\s\"]+)*"),
    "http_cf_connecting_ip": Directive("hdr_cf_connecting_ip", ADDRESS),
    "http_x_real_ip": Directive("hdr_x_real_ip", ADDRESS),
}

# Field-template names for presets without a config string: {name} captures, {-} skips a
# field, {...} skips the rest of the line.
TEMPLATE = {
    "client_ip": Directive("client_ip", ADDRESS), "port": Directive(None, r"\d+"),
    "vhost": Directive("vhost", r"[^\s\"]+"),
    "time_iso": Directive("time_iso", r"\d{4}-\d\d-\d\dT[^\s\"]+"),
    "time_clf": Directive("time_clf", r"\[[^\]]*\]"),
    "time_epoch": Directive("time_epoch", r"\d+(?:\.\d+)?"),
    "request": Directive("request", QUOTED), "method": Directive("method"), "target": Directive("target"),
    "status": Directive("status", r"\d{3}|-1|-|0"), "bytes": Directive("bytes", r"\+?\d+|-"),
    "referer": Directive("referer", QUOTED), "user_agent": Directive("user_agent", QUOTED),
    "request_time_s": Directive("request_time_s", r"-?[\d.]+|-"),
    "request_time_ms": Directive("request_time_ms", r"-?[\d.]+|-"),
    "-": Directive(None), "...": Directive(None, r".*"),
    # HAProxy's timers Tq/Tw/Tc/Tr/Ta (ms, -1 when not reached; '+' with option logasap): Ta is the total
    "haproxy_timers": Directive(None, r"-?\d+/-?\d+/-?\d+/-?\d+/\+?(?P<request_time_ms>-?\d+)"),
    # the leftmost address of an X-Forwarded-For list (Envoy's default format logs no peer address)
    "xff_client": Directive("client_ip", r"[^\s\",]+"), "xff_rest": Directive(None, r"(?:,[^\"]*)?"),
}

# %{...}X forms that are read over: headers, notes, env, cookies, ports, pids, trailers.
_SKIPPED_APACHE_KINDS = ("i", "o", "e", "n", "C", "p", "P", "x", "c", "^ti", "^to")
_APACHE_TOKEN = re.compile(r"%[<>]?(?:\{[^}]*\})?[a-zA-Z%]")
_NGINX_TOKEN = re.compile(r"\$(?:\{([a-z_][a-z0-9_]*)\}|([a-z_][a-z0-9_]*))")
_TEMPLATE_TOKEN = re.compile(r"\{(-|\.\.\.|[a-z_]+)\}")
# An unnamed trailing request time (nginx $request_time in seconds with a dot; Apache's %D in
# whole microseconds). Written so that the regex stays one-pass (no choice between two ways of
# reading a space), which lets the regex engine use its fastest capturing matcher.
_OPTIONAL_TAIL = r"(?:[ \t]+(?:(?P<request_time_tail>\d+(?:\.\d+)?|-)[ \t]*)?)?"


@dataclass(frozen=True)
class LogFormat:
    """A compiled format: its name, the description it came from, and how to read a line.

    Line formats have ``regex`` (anchored, named groups); JSON-lines formats have ``json_fields``
    (group -> JSON paths tried in order). ``decoders`` names groups whose text needs undoing
    (``csv`` quoting, ``url`` percent-encoding, ``plus`` IIS '+' for space). ``utc`` formats log
    times in UTC by definition; ``absolute_targets`` formats log ``scheme://host/path`` targets.
    """

    name: str
    source: str
    regex: str | None = None
    json_fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    decoders: tuple[tuple[str, str], ...] = ()
    absolute_targets: bool = False
    header_prefix: str | None = None   # lines starting with this are headers, not events
    ignored: tuple[str, ...] = ()      # unknown variables / directives read over as opaque fields

    @property
    def groups(self) -> tuple[str, ...]:
        if self.regex is None:
            return tuple(group for group, _ in self.json_fields)
        return tuple(re.compile(self.regex).groupindex)

    @property
    def lenient(self) -> str | None:
        """The regex of the second, anchored pass, or None when there is nothing to relax: every
        quoted field may hold any text, quotes included (Traefik, Envoy, HAProxy's captures and
        many CSV exports do not escape them). The fields before and after each quoted field, from
        both ends of the line, decide where it ends."""
        if self.regex is None:
            return None
        loose = self.regex.replace(QUOTED, ".*").replace(CSV_CELL, CSV_LOOSE_CELL)
        return loose if loose != self.regex else None


def _directive_pattern(directive: Directive, quoted: bool, seen: set[str]) -> str:
    pattern = QUOTED if quoted else directive.pattern
    if directive.group is None or directive.group in seen:
        return f"(?:{pattern})"
    seen.add(directive.group)
    return f"(?P<{directive.group}>{pattern})"


def _compile_tokens(source: str, token: re.Pattern[str], lookup, spaces: str = " ",
                    ignored: list[str] | None = None) -> str:
    parts, seen, pos = [], set[str](), 0
    ignored = [] if ignored is None else ignored
    for match in token.finditer(source):
        before, after = source[pos:match.start()], source[match.end():match.end() + 1]
        parts.append(re.escape(before).replace(r"\ ", spaces))
        quoted = before.endswith('"') and after == '"'
        parts.append(_directive_pattern(lookup(match, ignored), quoted, seen))
        pos = match.end()
    parts.append(re.escape(source[pos:]).replace(r"\ ", spaces))
    return "".join(parts)


def _apache_lookup(match: re.Match[str], ignored: list[str]) -> Directive:
    text = match.group(0)
    if text == "%%":
        return Directive(None, "%")
    key = text[1:].lstrip("<>") if text[1:] not in APACHE else text[1:]
    if key not in APACHE and key.startswith("{") and key.endswith(_SKIPPED_APACHE_KINDS):
        return Directive(None)  # any other header, note, env var or cookie: read over it
    if key not in APACHE and key.startswith("{"):
        ignored.append(text)   # e.g. mod_ssl's %{SSL_PROTOCOL}x or a module's own %{...}^xx
        return OPAQUE
    if key not in APACHE:
        raise ConfigError(f"unknown Apache LogFormat directive {text!r}",
                          hint="see 'Log formats' in the README for the supported directives")
    return APACHE[key]


# An unknown field read over: one token, possibly empty; upstream_* variables hold lists when a
# request went to several upstreams ('10.0.0.1:80, 10.0.0.2:80 : 10.0.0.3:80').
OPAQUE = Directive(None, r"\S*")
OPAQUE_LIST = Directive(None, r"\S*(?:(?:, | : )\S+)*")
_KNOWN_PREFIXES = ("http_", "sent_http_", "cookie_", "arg_", "upstream_", "ssl_")


def _nginx_lookup(match: re.Match[str], ignored: list[str]) -> Directive:
    name = match.group(1) or match.group(2)
    if name in NGINX:
        return NGINX[name]
    if not name.startswith(_KNOWN_PREFIXES):
        ignored.append(f"${name}")
    return OPAQUE_LIST if name.startswith("upstream_") else OPAQUE


def _template_lookup(match: re.Match[str], ignored: list[str]) -> Directive:
    name = match.group(1)
    if name not in TEMPLATE:
        raise ConfigError(f"unknown field template name {{{name}}}")
    return TEMPLATE[name]


def _anchored(body: str, source: str, name: str, tail: bool) -> str:
    tail_pattern = _OPTIONAL_TAIL if tail and "request_time" not in body else r"[ \t]*"
    regex = f"^{body}{tail_pattern}$"
    if "(?P<client_ip>" not in regex:
        raise ConfigError(f"log format {name} ({source!r}) has no client address (%h / $remote_addr)")
    return regex


def compile_format(source: str, name: str = "custom", optional_tail: bool = False) -> LogFormat:
    """Compile an Apache ``LogFormat`` or nginx ``log_format`` string to an anchored regex.

    The dialect is recognised by its sigil (``%`` for Apache, ``$`` for nginx). With
    ``optional_tail`` an unnamed trailing request-time field is accepted, as many sites append one.
    Raises ConfigError naming an unknown directive.
    """
    source = source.strip().strip("'")
    ignored: list[str] = []
    if _NGINX_TOKEN.search(source):
        body = _compile_tokens(source, _NGINX_TOKEN, _nginx_lookup, ignored=ignored)
    elif _APACHE_TOKEN.search(source):
        body = _compile_tokens(source, _APACHE_TOKEN, _apache_lookup, ignored=ignored)
    else:
        raise ConfigError(f"no directives in log format {source!r}",
                          hint="give an Apache LogFormat (%h ...) or nginx log_format ($remote_addr ...)")
    return LogFormat(name=name, source=source, regex=_anchored(body, source, name, optional_tail),
                     ignored=tuple(dict.fromkeys(ignored)))


def compile_template(source: str, name: str, absolute_targets: bool = False) -> LogFormat:
    """Compile a field template (``{client_ip} {-} ...``); runs of spaces in lines match one space."""
    body = _compile_tokens(source, _TEMPLATE_TOKEN, _template_lookup, spaces=" +")
    # a quoted field may stand as a bare '-' (S3 writes '-' for a missing request-URI, referer or agent)
    body = re.sub(r'"(\(\?P<\w+>' + re.escape(QUOTED) + r'\))"', lambda m: f'(?:"{m.group(1)}"|-)', body)
    return LogFormat(name=name, source=source, regex=_anchored(body, source, name, False),
                     absolute_targets=absolute_targets)


def compile_w3c(fields_line: str, sample: str, name: str = "w3c") -> LogFormat:
    """A W3C extended log format from its ``#Fields:`` directive; ``sample`` is one data line,
    whose tabs (CloudFront) or spaces (IIS) give the separator."""
    names = fields_line.split(":", 1)[1].split()
    tab = "\t" in sample
    field_pattern, separator = (r"[^\t]*", r"\t") if tab else (r"\S+", " ")
    parts, decoders, seen = [], [], set()
    for field_name in names:
        group = W3C_FIELDS.get(field_name.lower())
        if group is None or group in seen:
            parts.append(f"(?:{field_pattern})")
            continue
        seen.add(group)
        parts.append(f"(?P<{group}>{field_pattern})")
        if group in ("user_agent", "referer") or group.startswith("hdr_"):   # logged headers: encoded alike
            decoders.append((group, "url" if tab else "plus"))
    regex = f"^{separator.join(parts)}[ \\t]*$"
    if "(?P<client_ip>" not in regex or "(?P<time_w3c_date>" not in regex:
        raise ConfigError(f"W3C #Fields header names no c-ip or date field: {fields_line!r}")
    return LogFormat(name=name, source=fields_line, regex=regex, decoders=tuple(decoders), header_prefix="#")


def compile_csv(header: str, name: str = "csv") -> LogFormat:
    """A CSV log with a header row: recognised column names become event fields, others are skipped."""
    cell = CSV_CELL
    parts, decoders, seen = [], [], set()
    for column in _csv_cells(header):
        group = CSV_COLUMNS.get(column.strip().strip('"').lower().replace(" ", "_").replace("-", "_"))
        if group is None or group in seen:
            parts.append(cell)
            continue
        seen.add(group)
        parts.append(f"(?P<{group}>{cell})")
        decoders.append((group, "csv"))
    regex = f"^{','.join(parts)}[ \\t]*$"
    if "(?P<client_ip>" not in regex or "(?P<time_any>" not in regex:
        raise ConfigError(f"CSV header names no client address or timestamp column: {header[:200]!r}",
                          hint="name the columns e.g. ip,timestamp,request,status,bytes")
    return LogFormat(name=name, source=header, regex=regex, decoders=tuple(decoders),
                     header_prefix=header.split(",", 1)[0])


def _csv_cells(header: str) -> list[str]:
    return [cell for cell in re.findall(r'"(?:[^"]|"")*"|[^,]+|(?<=,)(?=,|$)|^(?=,)', header)]


def compile_json(name: str, fields: dict[str, tuple[str, ...]], absolute_targets: bool = False) -> LogFormat:
    """A JSON-lines format: event field or helper group -> JSON paths (``$.a.b``) tried in order."""
    if "client_ip" not in fields:
        raise ConfigError(f"JSON field mapping for {name} has no client_ip")
    return LogFormat(name=name, source=repr(fields), json_fields=tuple(fields.items()),
                     absolute_targets=absolute_targets)


def parse_json_mapping(text: str) -> dict[str, tuple[str, ...]]:
    """``client_ip=remote_addr,timestamp=time`` (comma separated; nested keys with dots) as a mapping
    over the generic JSON defaults; raises ConfigError for an unknown event field."""
    mapping = dict(JSON_FIELDS["json"])
    for item in filter(None, (part.strip() for part in text.split(","))):
        field_name, _, key = item.partition("=")
        group = "time_any" if field_name == "timestamp" else field_name
        if group not in {**mapping, "request": (), "method": (), "path": (), "query_raw": ()} or not key:
            raise ConfigError(f"bad JSON field mapping {item!r}", hint="use FIELD=key, e.g. client_ip=remote_addr")
        mapping[group] = (key if key.startswith("$") else "$." + key,)
    return mapping


def preset(name: str) -> LogFormat:
    """The named line preset, compiled; raises ConfigError naming the known presets.

    Header-driven presets (``w3c``, ``cloudfront``, ``csv``) compile from their default header
    here; :func:`from_header` compiles them from a file's own header.
    """
    if name not in PRESETS:
        known = ", ".join(PRESETS)
        raise ConfigError(f"unknown log format {name!r}", hint=f"known formats: {known}, auto")
    spec = PRESETS[name]
    return _build(name, spec)


def _build(name: str, spec: Preset) -> LogFormat:
    if spec.kind == "config":
        return compile_format(spec.source, name=name, optional_tail=spec.optional_tail)
    if spec.kind == "template":
        return compile_template(spec.source, name=name, absolute_targets=spec.absolute_targets)
    if spec.kind == "w3c":
        sample = "\t" if name == "cloudfront" else " "
        return compile_w3c(spec.source, sample, name=name)
    if spec.kind == "csv":
        return compile_csv(spec.source, name=name)
    return compile_json(name, JSON_FIELDS[name], absolute_targets=spec.absolute_targets)


def from_header(name: str, header: str | None, sample: str) -> LogFormat:
    """A header-driven preset compiled from the file's own header line when it has one."""
    if header is None:
        return preset(name)
    return compile_w3c(header, sample, name=name) if name in ("w3c", "cloudfront") else compile_csv(header, name)


def detection_candidates() -> list[LogFormat]:
    """Line presets in the order auto-detection prefers them when they match equally well."""
    return [preset(name) for name, spec in PRESETS.items() if spec.detect]

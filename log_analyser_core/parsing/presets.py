"""The named log format presets, as data (GoAccess-style): each is a description that
:mod:`log_formats` compiles, plus the field-name tables for header-driven and JSON formats.

Add a preset here, with a golden sample in tests/data/formats/, and it is parsed, detected and tested.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """A named format. ``kind``: ``config`` (Apache/nginx string), ``template`` (field template),
    ``w3c`` / ``csv`` (default header; a file's own header wins), ``json`` (JSON_FIELDS mapping)."""

    kind: str
    source: str
    description: str
    detect: bool = True             # tried by --format auto (JSON presets: by the file's shape)
    optional_tail: bool = False     # accept an unnamed trailing request time
    absolute_targets: bool = False  # request targets are scheme://host/path


_COMBINED = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'
_NGINX_COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                   '"$http_referer" "$http_user_agent"')

# Kubernetes ingress-nginx's default 'upstreaminfo' log_format.
_INGRESS_NGINX = (_NGINX_COMBINED + " $request_length $request_time [$proxy_upstream_name] "
                  "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length "
                  "$upstream_response_time $upstream_status $req_id")
# nginx-proxy-manager's 'proxy' log_format (docker/rootfs/etc/nginx/conf.d/include/log.conf).
_NPM = ('[$time_local] $upstream_cache_status $upstream_status $status - $request_method $scheme $host '
        '"$request_uri" [Client $remote_addr] [Length $body_bytes_sent] [Gzip $gzip_ratio] [Sent-to $server] '
        '"$http_user_agent" "$http_referer"')

PRESETS: dict[str, Preset] = {
    "combined": Preset("config", _COMBINED, "Apache/NCSA combined", optional_tail=True),
    "common": Preset("config", '%h %l %u %t "%r" %>s %b', "Apache/NCSA common (CLF)", optional_tail=True),
    "vcombined": Preset("config", "%v:%p " + _COMBINED, "Apache vhost_combined (virtual host:port first)",
                        optional_tail=True),
    "vcommon": Preset("config", '%v %h %l %u %t "%r" %>s %b', "Apache common with the virtual host first",
                      optional_tail=True),
    "nginx": Preset("config", _NGINX_COMBINED, "nginx combined (the default log_format)", detect=False,
                    optional_tail=True),
    "main": Preset("config", _NGINX_COMBINED + ' "$http_x_forwarded_for"',
                   "nginx 'main' (combined plus X-Forwarded-For)", optional_tail=True),
    "traefik": Preset("config", _COMBINED + ' %k "%{router}n" "%{backend}n" %{ms}Tms', "Traefik CLF access log"),
    "litespeed": Preset("config", _COMBINED, "LiteSpeed / OpenLiteSpeed access log (NCSA combined with "
                        "'Log Headers' Referer and User-Agent)", detect=False, optional_tail=True),
    "ingress-nginx": Preset("config", _INGRESS_NGINX, "Kubernetes ingress-nginx default (upstreaminfo)"),
    "npm": Preset("config", _NPM, "nginx-proxy-manager proxy host log"),
    "haproxy": Preset("template", "{client_ip}:{port} {time_clf} {-} {-} {haproxy_timers} {status} {bytes} {-} {-} "
                      '{-} {-} {-} {...}"{request}"', "HAProxy option httplog"),
    "haproxy-clf": Preset("template", '{client_ip} {-} {-} {time_clf} "{request}" {status} {bytes} "{referer}" '
                          '"{user_agent}" {-} {-} {-} {-} {-} {-} {-} {-} {-} {request_time_ms}{...}',
                          "HAProxy option httplog clf"),
    "envoy": Preset("template", '[{time_iso}] "{request}" {status} {-} {-} {bytes} {request_time_ms} {-} '
                    '"{xff_client}{xff_rest}" "{user_agent}" "{-}" "{vhost}" "{-}"{...}',
                    "Envoy default access log format (client from X-Forwarded-For)"),
    "squid": Preset("template", "{time_epoch} {-} {client_ip} {-}/{status} {bytes} {method} {target} {-} {-} {-}",
                    "Squid native access.log", absolute_targets=True),
    "awselb": Preset("template", "{time_iso} {-} {client_ip}:{port} {-} {-} {request_time_s} {-} {status} {-} {-} "
                     '{bytes} "{request}" "{user_agent}" {-} {-}', "AWS Classic Load Balancer",
                     absolute_targets=True),
    "awsalb": Preset("template", "{-} {time_iso} {-} {client_ip}:{port} {-} {-} {request_time_s} {-} {status} {-} "
                     '{-} {bytes} "{request}" "{user_agent}" {-} {-} {-} "{-}" "{vhost}"{...}',
                     "AWS Application Load Balancer", absolute_targets=True),
    "awss3": Preset("template", '{-} {vhost} {time_clf} {client_ip} {-} {-} {-} {-} "{request}" {status} {-} '
                    '{bytes} {-} {request_time_ms} {-} "{referer}" "{user_agent}"{...}',
                    "Amazon S3 server access log (bucket as virtual host)"),
    "w3c": Preset("w3c", "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip "
                  "cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken",
                  "W3C extended / IIS (#Fields: header driven)"),
    "cloudfront": Preset("w3c", "#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) "
                         "cs-uri-stem sc-status cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) "
                         "x-edge-result-type x-edge-request-id x-host-header cs-protocol cs-bytes time-taken "
                         "x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
                         "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte "
                         "x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end",
                         "Amazon CloudFront standard log (tab separated W3C)"),
    "caddy": Preset("json", "", "Caddy JSON access log"),
    "envoy-json": Preset("json", "", "Envoy / Istio JSON access log (Istio's default keys)"),
    "traefik-json": Preset("json", "", "Traefik JSON access log"),
    "cloudflare": Preset("json", "", "Cloudflare Logpush HTTP requests (JSON)"),
    "gcp-lb": Preset("json", "", "Google Cloud HTTP(S) Load Balancer (Cloud Logging JSON)", absolute_targets=True),
    "azure-frontdoor": Preset("json", "", "Azure Front Door access log (JSON)", absolute_targets=True),
    "json": Preset("json", "", "JSON lines with a field mapping (nginx escape=json, app logs)"),
    "csv": Preset("csv", "ip,timestamp,request,status,bytes,response_time,user_agent,referer",
                  "CSV with a header row (ip,timestamp,request,status,bytes,response_time...)"),
}

# W3C extended field names (IIS and CloudFront) -> event field or helper group.
W3C_FIELDS = {
    "date": "time_w3c_date", "time": "time_w3c_time", "c-ip": "client_ip", "cs-method": "method",
    "cs-uri-stem": "path", "cs-uri-query": "query_raw", "cs-uri": "target", "sc-status": "status",
    "sc-bytes": "bytes", "cs(user-agent)": "user_agent", "cs(referer)": "referer", "cs-host": "vhost",
    "cs(host)": "vhost", "x-host-header": "vhost", "s-sitename": None, "time-taken": "request_time_w3c",
    "cs-version": "protocol", "cs-protocol-version": "protocol", "x-forwarded-for": "hdr_x_forwarded_for",
    "cs(x-forwarded-for)": "hdr_x_forwarded_for", "cs(cf-connecting-ip)": "hdr_cf_connecting_ip",
    "cs(x-real-ip)": "hdr_x_real_ip",
}

# CSV header names (lower case, '-' and ' ' as '_') -> event field or helper group.
CSV_COLUMNS = {
    **dict.fromkeys(("ip", "client_ip", "clientip", "remote_addr", "remote_ip", "c_ip", "src_ip", "source_ip",
                     "client"), "client_ip"),
    **dict.fromkeys(("timestamp", "time", "date", "datetime", "@timestamp", "time_local", "ts", "date_time"),
                    "time_any"),
    "request": "request", **dict.fromkeys(("method", "http_method", "request_method", "verb"), "method"),
    **dict.fromkeys(("path", "uri", "url", "request_uri", "endpoint"), "target"),
    **dict.fromkeys(("query", "query_string", "args"), "query_raw"),
    **dict.fromkeys(("status", "status_code", "response_code", "http_status", "sc_status"), "status"),
    **dict.fromkeys(("bytes", "size", "body_bytes_sent", "bytes_sent", "response_size", "sc_bytes"), "bytes"),
    **dict.fromkeys(("response_time", "request_time", "duration", "latency", "elapsed"), "request_time_s"),
    **dict.fromkeys(("response_time_ms", "duration_ms", "latency_ms", "time_taken"), "request_time_ms"),
    **dict.fromkeys(("user_agent", "useragent", "agent", "http_user_agent", "ua"), "user_agent"),
    **dict.fromkeys(("referer", "referrer", "http_referer"), "referer"),
    **dict.fromkeys(("vhost", "host", "server_name", "domain", "http_host"), "vhost"),
    **dict.fromkeys(("protocol", "http_version", "server_protocol"), "protocol"),
    **dict.fromkeys(("x_forwarded_for", "xff", "http_x_forwarded_for"), "hdr_x_forwarded_for"),
}

# JSON-lines field mappings: group -> JSON paths, first non-null wins.
JSON_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "caddy": {
        "client_ip": ("$.request.client_ip", "$.request.remote_ip"), "peer_ip": ("$.request.remote_ip",),
        "time_any": ("$.ts",), "method": ("$.request.method",), "target": ("$.request.uri",),
        "protocol": ("$.request.proto",), "vhost": ("$.request.host",), "status": ("$.status",),
        "bytes": ("$.size",), "request_time_s": ("$.duration",),
        "user_agent": ("$.request.headers['User-Agent'][0]",), "referer": ("$.request.headers.Referer[0]",),
        "hdr_x_forwarded_for": ("$.request.headers['X-Forwarded-For'][0]",),
    },
    "envoy-json": {
        "client_ip": ("$.downstream_remote_address", "$.downstream_direct_remote_address"),
        "time_any": ("$.start_time",), "method": ("$.method",), "target": ("$.path",),
        "protocol": ("$.protocol",), "status": ("$.response_code",), "bytes": ("$.bytes_sent",),
        "request_time_ms": ("$.duration",), "user_agent": ("$.user_agent",), "referer": ("$.referer",),
        "vhost": ("$.authority",), "hdr_x_forwarded_for": ("$.x_forwarded_for",),
    },
    "traefik-json": {
        "client_ip": ("$.ClientHost", "$.ClientAddr"), "time_any": ("$.StartUTC", "$.StartLocal", "$.time"),
        "method": ("$.RequestMethod",), "target": ("$.RequestPath",), "protocol": ("$.RequestProtocol",),
        "vhost": ("$.RequestHost",), "status": ("$.DownstreamStatus", "$.OriginStatus"),
        "bytes": ("$.DownstreamContentSize",), "request_time_ns": ("$.Duration",),
        "user_agent": ("$['request_User-Agent']",), "referer": ("$.request_Referer",),
        "hdr_x_forwarded_for": ("$['request_X-Forwarded-For']",), "hdr_x_real_ip": ("$['request_X-Real-Ip']",),
    },
    "cloudflare": {
        "client_ip": ("$.ClientIP",), "time_any": ("$.EdgeStartTimestamp",), "method": ("$.ClientRequestMethod",),
        "target": ("$.ClientRequestURI", "$.ClientRequestPath"), "protocol": ("$.ClientRequestProtocol",),
        "vhost": ("$.ClientRequestHost",), "status": ("$.EdgeResponseStatus",), "bytes": ("$.EdgeResponseBytes",),
        "user_agent": ("$.ClientRequestUserAgent",), "referer": ("$.ClientRequestReferer",),
        "request_time_ms": ("$.OriginResponseDurationMs",),
    },
    "gcp-lb": {
        "client_ip": ("$.httpRequest.remoteIp",), "time_any": ("$.timestamp",),
        "method": ("$.httpRequest.requestMethod",), "target": ("$.httpRequest.requestUrl",),
        "protocol": ("$.httpRequest.protocol",), "status": ("$.httpRequest.status",),
        "bytes": ("$.httpRequest.responseSize",), "user_agent": ("$.httpRequest.userAgent",),
        "referer": ("$.httpRequest.referer",), "request_time_s": ("$.httpRequest.latency",),
    },
    "azure-frontdoor": {
        "client_ip": ("$.properties.clientIp",), "peer_ip": ("$.properties.socketIp",),
        "time_any": ("$.time",), "method": ("$.properties.httpMethod",), "target": ("$.properties.requestUri",),
        "vhost": ("$.properties.hostName",), "status": ("$.properties.httpStatusCode",),
        "bytes": ("$.properties.responseBytes",), "user_agent": ("$.properties.userAgent",),
        "referer": ("$.properties.referer",), "request_time_s": ("$.properties.timeTaken",),
    },
    "json": {
        "client_ip": ("$.remote_addr", "$.client_ip", "$.ip", "$.clientip", "$.remote_ip", "$.c_ip"),
        "time_any": ("$.time", "$.timestamp", "$['@timestamp']", "$.time_iso8601", "$.time_local", "$.ts"),
        "request": ("$.request",), "method": ("$.method", "$.request_method"),
        "target": ("$.request_uri", "$.uri", "$.path", "$.url"),
        "status": ("$.status", "$.status_code", "$.response_code"),
        "bytes": ("$.body_bytes_sent", "$.bytes", "$.size", "$.bytes_sent"),
        "referer": ("$.http_referer", "$.referer", "$.referrer"),
        "user_agent": ("$.http_user_agent", "$.user_agent", "$.agent"),
        "vhost": ("$.host", "$.http_host", "$.server_name", "$.vhost"),
        "request_time_s": ("$.request_time", "$.duration", "$.response_time"),
        "protocol": ("$.server_protocol", "$.protocol"),
        "hdr_x_forwarded_for": ("$.http_x_forwarded_for", "$.x_forwarded_for"),
        "hdr_cf_connecting_ip": ("$.http_cf_connecting_ip",), "hdr_x_real_ip": ("$.http_x_real_ip",),
    },
}

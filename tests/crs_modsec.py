"""ModSecurity (libmodsecurity 3, PyPI ``libmodsecurity``) with the CRS request rules: the oracle
the CRS stage is compared with. Each request is rebuilt from what an access log holds: method,
URI as logged, protocol, and the Host, User-Agent and Referer headers (and any other header the
log holds, such as X-Forwarded-For)."""
from __future__ import annotations

from pathlib import Path

from libmodsecurity import ModSecurity, RulesSet, Transaction

SETUP = """SecRuleEngine DetectionOnly
SecRequestBodyAccess On
SecAction "id:900000,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level={paranoia}"
SecAction "id:900990,phase:1,pass,nolog,setvar:tx.crs_setup_version=4280"
"""
BODY_METHODS = ("POST", "PUT", "PATCH")


class ModSecOracle:
    """``fired(request)``: the ids of the rules ModSecurity logs for one request."""

    def __init__(self, rules_dir: Path, paranoia: int) -> None:
        self._engine = ModSecurity()
        self._hits: list[int] = []
        self._engine.set_rule_message_callback(lambda message: self._hits.append(message.rule_id))
        self._rules = RulesSet()
        if self._rules.load(SETUP.format(paranoia=paranoia)) < 0:
            raise RuntimeError(self._rules.get_parser_error())
        for path in sorted(rules_dir.glob("REQUEST-9*.conf")):
            if self._rules.load_from_uri(str(path)) < 0:
                raise RuntimeError(self._rules.get_parser_error())

    def close(self) -> None:
        self._engine.set_rule_message_callback(None)

    def fired(self, method: str, uri: str, protocol: str | None, host: str | None, user_agent: str | None,
              referer: str | None, headers: dict[str, str | None] | None = None) -> set[int]:
        """``headers``: further logged request headers (X-Forwarded-For ...), sent as they are."""
        self._hits.clear()
        tx = Transaction(self._engine, self._rules)
        tx.process_connection("192.0.2.1", 40000, "192.0.2.2", 80)
        version = (protocol or "HTTP/1.1").split("/", 1)[-1]
        tx.process_uri(uri, method, version)
        length = "0" if method in BODY_METHODS else None   # a log does not show a body: say there was none
        for name, value in (("Host", host or "localhost"), ("User-Agent", user_agent), ("Referer", referer),
                            ("Content-Length", length), *(headers or {}).items()):
            if value is not None:
                tx.add_request_header(name, value)
        tx.process_request_headers()
        tx.process_request_body()
        tx.process_logging()
        return set(self._hits)


class TransformOracle:
    """What ModSecurity's transformations make of a value: one rule per transformation on the
    argument ``v``, each logging its MATCHED_VAR (the transformed value) as logdata."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._engine = ModSecurity()
        self._data: dict[int, str] = {}
        self._engine.set_rule_message_callback(lambda m: self._data.__setitem__(m.rule_id, m.data))
        self._rules = RulesSet()
        rules = ["SecRuleEngine DetectionOnly", "SecRequestBodyAccess On"]
        for number, name in enumerate(names, start=1):
            rules.append(f'SecRule ARGS:v "@unconditionalMatch" "id:{number},phase:2,pass,log,t:none,t:{name},'
                         f"msg:'{name}',logdata:'%{{MATCHED_VAR}}'\"")
        if self._rules.load("\n".join(rules)) < 0:
            raise RuntimeError(self._rules.get_parser_error())

    def close(self) -> None:
        self._engine.set_rule_message_callback(None)

    def transform(self, value: str) -> dict[str, str]:
        """Transformation name -> ModSecurity's result on ``value`` (sent percent-encoded)."""
        from urllib.parse import quote

        self._data.clear()
        tx = Transaction(self._engine, self._rules)
        tx.process_connection("192.0.2.1", 40000, "192.0.2.2", 80)
        tx.process_uri("/?v=" + quote(value, safe=""), "GET", "1.1")
        tx.add_request_header("Host", "localhost")
        tx.process_request_headers()
        tx.process_request_body()
        tx.process_logging()
        return {name: self._data.get(number, "") for number, name in enumerate(self.names, start=1)}

"""`log_analyser rules update` against a local HTTP server on 127.0.0.1 standing in for GitHub's release API."""
from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import log_analyser
from log_analyser_core.errors import ExitCode, RulesError
from log_analyser_core.rules import sigma_engine, sigmahq

WEB_RULE = """title: Test Webserver Rule
id: 2f6d3b7e-8a4c-4d2e-9f1a-5b6c7d8e9f01
status: test
description: a webserver rule
references: [https://example.org/]
author: tests
date: 2026-12-07
tags: [attack.initial-access, attack.t1190]
logsource: {category: webserver}
detection:
    selection:
        cs-uri-query|contains: '/very-distinctive-exploit-path'
    condition: selection
level: high
"""
PROCESS_RULE = WEB_RULE.replace("webserver", "process_creation").replace("2f6d3b7e", "3f6d3b7e")


def package(extra: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("rules/web/webserver_generic/web_test.yml", WEB_RULE)
        archive.writestr("rules/windows/process_creation/proc_test.yml", PROCESS_RULE)
        archive.writestr("LICENSE.Detection.Rules.md", "DRL 1.1")
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return buffer.getvalue()


class Release:
    """What the server answers: a release naming one asset, and the asset's bytes."""

    def __init__(self, data: bytes, digest: str | None = "auto", tag: str = "r2026-12-01") -> None:
        self.data, self.tag = data, tag
        self.digest = f"sha256:{hashlib.sha256(data).hexdigest()}" if digest == "auto" else digest
        self.requests: list[str] = []


@pytest.fixture
def server():
    state: dict[str, Release] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            release = state["release"]
            release.requests.append(self.path)
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/repos/SigmaHQ/sigma/releases/latest":
                asset = {"name": "sigma_core.zip", "browser_download_url": f"{base}/download/sigma_core.zip"}
                if release.digest:
                    asset["digest"] = release.digest
                body = json.dumps({"tag_name": release.tag, "assets": [asset]}).encode()
            elif self.path == "/download/sigma_core.zip":
                body = release.data
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/repos/SigmaHQ/sigma/releases/latest"
    yield state, url
    httpd.shutdown()
    httpd.server_close()


def test_update_installs_the_verified_webserver_rules(server, tmp_path):
    state, url = server
    state["release"] = Release(package())
    done = sigmahq.update("core", url, tmp_path)
    assert done.tag == "r2026-12-01" and done.rules == 1 and done.skipped == 1
    assert done.folder == tmp_path / "r2026-12-01" == sigmahq.installed(tmp_path)
    assert sorted(p.name for p in done.folder.iterdir()) == ["RELEASE.json",
                                                             "rules__web__webserver_generic__web_test.yml"]
    ruleset = sigma_engine.check([done.folder])   # the installed rules run beside the built-in pack
    assert [r.title for r in ruleset.rules] == ["Test Webserver Rule"] and not ruleset.of_kind("error")
    assert state["release"].requests == ["/repos/SigmaHQ/sigma/releases/latest", "/download/sigma_core.zip"]


def test_a_package_that_does_not_match_its_digest_is_not_installed(server, tmp_path):
    state, url = server
    state["release"] = Release(package(), digest="sha256:" + "0" * 64)
    with pytest.raises(RulesError, match="does not match the published"):
        sigmahq.update("core", url, tmp_path)
    assert sigmahq.installed(tmp_path) is None and list(tmp_path.iterdir()) == []   # nothing left behind


def test_a_package_without_a_digest_is_refused(server, tmp_path):
    state, url = server
    state["release"] = Release(package(), digest=None)
    with pytest.raises(RulesError, match="publishes no SHA-256 digest"):
        sigmahq.update("core", url, tmp_path)


def test_member_names_cannot_leave_the_folder(server, tmp_path):
    state, url = server
    evil = {"../../escaped.yml": WEB_RULE.replace("2f6d3b7e", "4f6d3b7e"),
            "/abs/path.yml": WEB_RULE.replace("2f6d3b7e", "5f6d3b7e")}
    state["release"] = Release(package(evil))
    done = sigmahq.update("core", url, tmp_path / "root")
    assert not (tmp_path / "escaped.yml").exists()
    assert sorted(p.name for p in done.folder.glob("*.yml")) == [
        "abs__path.yml", "escaped.yml", "rules__web__webserver_generic__web_test.yml"]


def test_an_update_replaces_the_previous_release(server, tmp_path):
    state, url = server
    state["release"] = Release(package(), tag="r2026-11-01")
    sigmahq.update("core", url, tmp_path)
    state["release"] = Release(package(), tag="r2026-12-01")
    assert sigmahq.update("core", url, tmp_path).folder == sigmahq.installed(tmp_path) == tmp_path / "r2026-12-01"


def test_plain_http_is_refused_except_to_this_machine(tmp_path):
    with pytest.raises(RulesError, match="refusing to download"):
        sigmahq.update("core", "http://127.0.0.1.example.org/latest", tmp_path)


def test_cli_rules_update(server, tmp_path, capsys):
    state, url = server
    state["release"] = Release(package())
    code = log_analyser.main(["rules", "update", "--url", url, "--dest", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == ExitCode.OK and out.strip() == str(tmp_path / "r2026-12-01")
    assert "1 webserver rules" in err and f"--rules {tmp_path}" in err
    state["release"] = Release(package(), digest="sha256:" + "1" * 64)
    code = log_analyser.main(["rules", "update", "--url", url, "--dest", str(tmp_path / "other")])
    out, err = capsys.readouterr()
    assert code == ExitCode.RULES and err.startswith("error: ") and len(err.strip().splitlines()) == 1

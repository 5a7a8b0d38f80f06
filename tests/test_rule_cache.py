"""Start-up: the compiled Sigma pack is kept in the user cache dir, keyed by the rule files' content
and the versions, and a small run imports none of the heavy libraries it does not need."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

from log_analyser_core.errors import RulesError
from log_analyser_core.rules import sigma_cache, sigma_engine


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "log_analyser" / "sigma"


def _same(first: sigma_engine.RuleSet, second: sigma_engine.RuleSet) -> None:
    assert [(r.id, r.title, r.severity, r.status, r.tags, r.attack_type, r.path, r.views, r.fields)
            for r in first.rules] == \
        [(r.id, r.title, r.severity, r.status, r.tags, r.attack_type, r.path, r.views, r.fields) for r in second.rules]
    assert all(a.expression.meta.eq(b.expression) for a, b in zip(first.rules, second.rules, strict=True))
    assert first.problems == second.problems and first.other_logsource == second.other_logsource


def test_the_second_load_reads_the_cached_pack(cache_home, monkeypatch):
    pack = [sigma_engine.builtin_dir()]
    compiled = sigma_engine.load(pack)
    assert len(list(cache_home.glob("*.json"))) == 1
    monkeypatch.setattr(sigma_engine, "check", lambda *a, **k: pytest.fail("compiled again"))
    cached = sigma_engine.load(pack)
    _same(compiled, cached)
    assert len(cached.rules) == len(list(sigma_engine.builtin_dir().glob("*.yml")))


def test_an_edited_rule_file_is_compiled_again(cache_home, tmp_path):
    folder = tmp_path / "rules"
    shutil.copytree(sigma_engine.builtin_dir(), folder)
    before = sigma_engine.load([folder])
    target = folder / "web_dotenv_probe.yml"
    target.write_text(target.read_text().replace("title: ", "title: Edited ", 1))
    after = sigma_engine.load([folder])
    assert len(list(cache_home.glob("*.json"))) == 2
    titles = {r.path: r.title for r in after.rules}
    assert titles[str(target)].startswith("Edited ") and titles != {r.path: r.title for r in before.rules}


def test_a_damaged_cache_file_is_ignored_and_rewritten(cache_home):
    pack = [sigma_engine.builtin_dir()]
    compiled = sigma_engine.load(pack)
    stored = next(cache_home.glob("*.json"))
    for damage in ("{not json", json.dumps({"key": stored.stem, "rules": [{"id": 1}]}), ""):
        stored.write_text(damage)
        _same(compiled, sigma_engine.load(pack))
        assert json.loads(stored.read_text())["key"] == stored.stem


def test_a_pack_with_errors_is_not_cached(cache_home, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "bad.yml").write_text("title: x\nlogsource: {category: webserver}\ndetection: {condition: nothing}\n")
    for _ in range(2):
        with pytest.raises(RulesError):
            sigma_engine.load([folder])
    assert not cache_home.exists() or not list(cache_home.glob("*.json"))


def test_the_key_covers_content_columns_and_versions(tmp_path, monkeypatch):
    rule = tmp_path / "r.yml"
    rule.write_text("a")
    first = sigma_cache.key([rule], ["path"])
    assert sigma_cache.key([rule], ["path", "query"]) != first
    rule.write_text("b")
    assert sigma_cache.key([rule], ["path"]) != first
    monkeypatch.setattr(sigma_cache, "_version", lambda name: "99")
    assert sigma_cache.key([rule], ["path"]) not in (first, None)
    assert sigma_cache.key([tmp_path / "missing.yml"], ["path"]) is None


SMALL_RUN = textwrap.dedent("""
    import json, sys
    import log_analyser
    code = log_analyser.main(["-f", sys.argv[1], "-o", sys.argv[2]])
    heavy = ("sigma", "sklearn", "scipy", "pandas", "tensorflow", "keras", "matplotlib", "fpdf")
    # what only some runs need: the progress bar (a terminal), CRS install (urllib, tarfile) and its compiler (regex)
    rare = ("tqdm", "urllib.request", "tarfile", "regex")
    print(json.dumps({"code": code, "heavy": sorted(m for m in heavy if m in sys.modules),
                      "rare": sorted(m for m in rare if m in sys.modules)}))
""")


def test_a_one_line_run_imports_nothing_heavy(tmp_path):
    log = tmp_path / "one.log"
    log.write_text('203.0.113.9 - - [02/Mar/2026:01:00:00 +0000] "GET /.env HTTP/1.1" 404 12 "-" "curl/8.5"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_DATA_HOME": str(tmp_path / "data")}   # no CRS installed
    runs = [subprocess.run([sys.executable, "-c", SMALL_RUN, str(log), str(tmp_path / "out.json")], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120) for _ in range(2)]
    first, second = (json.loads(run.stdout.splitlines()[-1]) for run in runs)
    assert first["code"] == second["code"] == 0
    assert first["heavy"] == ["sigma"]   # the pack is compiled once, with pySigma
    assert second["heavy"] == []         # then read from the cache
    assert second["rare"] == []          # no terminal here, no CRS installed in this cache dir
    assert json.loads((tmp_path / "out.json").read_text())["findings"][0]["ip"] == "203.0.113.9"

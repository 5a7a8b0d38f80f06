"""The knowledge lists (log_analyser_core/rules/lists/*.yaml): valid, cited, and matching as documented."""
from __future__ import annotations

import polars as pl
import pytest

from log_analyser_core.errors import RulesError
from log_analyser_core.rules import behaviour, lists

NAMES = lists.names()


def test_the_lists_ship_with_the_package():
    assert set(NAMES) == {"admin_consoles", "backup_archives", "cms_enumeration", "proxy_check_hosts",
                          "scanner_markers", "sensitive_files", "web_shells"}


@pytest.mark.parametrize("name", NAMES)
def test_every_list_loads_with_its_provenance(name):
    known = lists.load(name)
    assert known.entries and known.description
    assert "Core Rule Set" in known.provenance and "coreruleset" in known.provenance   # cites the CRS files read
    assert "restricted-files.data" in known.provenance or ".conf" in known.provenance or \
        "scanners-user-agents.data" in known.provenance or "web-shells" in known.provenance
    pl.Series([""]).str.contains("(?i)" + lists.pattern(name))   # one valid Rust regex


def matches(name: str, values: list[str]) -> list[bool]:
    return pl.Series(values).str.contains("(?i)" + lists.pattern(name)).to_list()


def test_segments_match_whole_names_folders_and_backup_copies():
    assert matches("sensitive_files", ["/.ssh/id_rsa", "/home/.bash_history", "/wp-config.php.bak",
                                       "/wp-config.php~", "/.git/HEAD", "/app/.aws/credentials"]) == [True] * 6
    assert matches("sensitive_files", ["/blog/ssh-keys", "/my.id_rsa.txt.html", "/git/", "/.gitignore",
                                       "/docs/htpasswd"]) == [False] * 5


def test_words_are_not_found_inside_longer_words():
    assert matches("scanner_markers", ["Nuclei - Open-source project", "Mozilla/5.00 (Nikto/2.1.6)", "x.oast.fun"]) \
        == [True] * 3
    assert matches("scanner_markers", ["/products/nucleic-acid", "Mozilla/5.0 (niktopia)"]) == [False, False]


def test_regex_lists():
    assert matches("cms_enumeration", ["/?author=2", "/wp-content/plugins/akismet/readme.txt",
                                       "/wp-json/wp/v2/users"]) == [True] * 3
    assert matches("cms_enumeration", ["/?authors=2", "/wp-content/plugins/akismet/akismet.css",
                                       "/?author=bob"]) == [False] * 3
    assert matches("proxy_check_hosts", ["http://198.51.100.9/", "http://azenv.net/", "https://x.example:8443/"]) \
        == [True] * 3
    assert matches("proxy_check_hosts", ["/http://notes", "/index.html"]) == [False, False]


def test_a_rule_naming_an_unknown_list_is_an_error_naming_it(tmp_path):
    rule = tmp_path / "r.yaml"
    rule.write_text("- id: x\n  title: x\n  severity: low\n  filter: {path: {list: no_such_list}}\n"
                    "  window: {maxretry: 1, findtime: 1}\n")
    with pytest.raises(RulesError) as error:
        behaviour.load_rules([rule])
    assert "no knowledge list named 'no_such_list'" in str(error.value) and "filter.path" in str(error.value)


def test_a_broken_list_is_reported_with_its_problems(tmp_path, monkeypatch):
    (tmp_path / "bad.yaml").write_text("name: other\ndescription: x\nprovenance: x\nmatch: glob\n"
                                       "entries: [a, a]\nextra: 1\n")
    monkeypatch.setattr(lists, "list_dir", lambda: tmp_path)
    lists.load.cache_clear()
    try:
        with pytest.raises(RulesError) as error:
            lists.load("bad")
    finally:
        lists.load.cache_clear()
    text = str(error.value)
    assert "unknown field 'extra'" in text and "name must be 'bad'" in text and "match must be one of" in text
    assert "duplicate entries: a" in text

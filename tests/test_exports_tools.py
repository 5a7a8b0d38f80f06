"""The blocklists checked by the programs that read them (Debian's nginx-light, apache2-bin,
iptables and nftables, installed by scripts/test), in their test-only modes: nothing is applied."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest

from log_analyser_core.report import exports
from log_analyser_core.results import Severity


@pytest.fixture(scope="module")
def mixed(hostile_result):
    """Flagged IPv4 and IPv6 clients (and the markup 'address', which must be left out)."""
    flagged = [i for i, f in enumerate(hostile_result.findings) if f.flagged]
    findings = list(hostile_result.findings)
    findings[flagged[0]] = replace(findings[flagged[0]], ip="2001:db8::dead:beef")
    return replace(hostile_result, findings=tuple(findings))


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} is missing: scripts/test installs it"
    return path


def check(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)


def nginx_test(folder, include: str) -> subprocess.CompletedProcess:
    (folder / "deny.conf").write_text(include)
    (folder / "nginx.conf").write_text(
        f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n"
        f"  client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};\n"
        f"  uwsgi_temp_path {folder}; scgi_temp_path {folder};\n"
        f"  server {{ listen unix:{folder}/s.sock; location / {{ include {folder}/deny.conf; return 204; }} }}\n}}\n")
    return check([tool("nginx"), "-t", "-q", "-c", str(folder / "nginx.conf"), "-p", str(folder)])


def test_nginx_accepts_the_include(mixed, tmp_path):
    result = nginx_test(tmp_path, exports.render_nginx(mixed, Severity.LOW))
    assert result.returncode == 0, result.stderr
    assert nginx_test(tmp_path, "deny 1.2.3.4 evil;\n").returncode != 0   # the check can fail


def apache_test(folder, include: str) -> subprocess.CompletedProcess:
    (folder / "deny.conf").write_text(include)
    modules = "/usr/lib/apache2/modules"
    (folder / "apache.conf").write_text(
        f"ServerRoot {folder}\nLoadModule mpm_event_module {modules}/mod_mpm_event.so\n"
        f"LoadModule authz_core_module {modules}/mod_authz_core.so\n"
        f"LoadModule authz_host_module {modules}/mod_authz_host.so\n"
        f"PidFile {folder}/apache.pid\nErrorLog {folder}/error.log\nListen 127.0.0.1:8\nServerName localhost\n"
        f"<Directory />\n    Include {folder}/deny.conf\n</Directory>\n")
    return check([tool("apache2"), "-t", "-f", str(folder / "apache.conf")])


def test_apache_accepts_the_include(mixed, tmp_path):
    result = apache_test(tmp_path, exports.render_apache(mixed, Severity.LOW))
    assert result.returncode == 0, result.stderr
    assert apache_test(tmp_path, "Require not ip 1.2.3.4 evil\n").returncode != 0


@pytest.mark.parametrize(("program", "render"), [("iptables-restore", exports.render_iptables),
                                                 ("ip6tables-restore", exports.render_ip6tables)])
def test_iptables_restore_accepts_the_file(mixed, program, render):
    text = render(mixed, Severity.LOW)
    assert "-A LOG_ANALYSER_BLOCK" in text
    result = check([tool(program), "--test", "--noflush"], text)
    assert result.returncode == 0, result.stderr
    assert check([tool(program), "--test", "--noflush"], text.replace("-j DROP", "--no-such-option")).returncode != 0


def test_nft_accepts_the_ruleset(mixed, tmp_path):
    path = tmp_path / "blocklist.nft"
    path.write_text(exports.render_nftables(mixed, Severity.LOW))
    result = check([tool("nft"), "-c", "-f", str(path)])
    assert result.returncode == 0, result.stderr
    path.write_text(exports.render_nftables(mixed, Severity.LOW).replace("ipv4_addr", "ipv9_addr"))
    assert check([tool("nft"), "-c", "-f", str(path)]).returncode != 0


# Addresses a client can put in its peer field or X-Forwarded-For: a scoped IPv6 address's scope is
# free text to Python's ipaddress (newlines, ';', '}'), so each of these once reached a blocklist.
HOSTILE_IPS = [
    "fe80::1%1\n-I INPUT 1 -j ACCEPT\n#",
    "fe80::1%1;include'evil.conf';#",
    "fe80::1%1}\ntable inet filter { chain input { policy accept; } }\n#",
    "fe80::1%" + "x" * 6000,
    "192.0.2.1\n-A INPUT -j ACCEPT",
    "192.0.2.1 ; deny all",
]


@pytest.fixture(scope="module")
def hostile_ips(mixed):
    """The mixed result with one flagged client for each hostile address, at high severity."""
    flagged = [i for i, f in enumerate(mixed.findings) if f.flagged and f.ip != "2001:db8::dead:beef"]
    findings = list(mixed.findings)
    template = findings[flagged[0]]
    extra = [replace(template, ip=ip, severity=Severity.CRITICAL, attack_types=("rce",)) for ip in HOSTILE_IPS]
    return replace(mixed, findings=tuple(extra + findings))


def test_hostile_addresses_are_never_written(hostile_ips):
    for render in (exports.render_blocklist, exports.render_nginx, exports.render_apache, exports.render_iptables,
                   exports.render_ip6tables, exports.render_nftables, exports.render_crowdsec):
        text = render(hostile_ips, Severity.LOW)
        assert "%" not in text and "ACCEPT" not in text and "evil" not in text and "deny all" not in text, render
    assert "7 flagged client(s) left out" in exports.render_nginx(hostile_ips, Severity.LOW)   # and the markup one


def test_every_export_with_hostile_addresses_passes_its_checker(hostile_ips, tmp_path):
    assert nginx_test(tmp_path, exports.render_nginx(hostile_ips, Severity.LOW)).returncode == 0
    assert apache_test(tmp_path, exports.render_apache(hostile_ips, Severity.LOW)).returncode == 0
    for program, render in (("iptables-restore", exports.render_iptables),
                            ("ip6tables-restore", exports.render_ip6tables)):
        result = check([tool(program), "--test", "--noflush"], render(hostile_ips, Severity.LOW))
        assert result.returncode == 0, result.stderr
    path = tmp_path / "blocklist.nft"
    path.write_text(exports.render_nftables(hostile_ips, Severity.LOW))
    assert check([tool("nft"), "-c", "-f", str(path)]).returncode == 0


def test_a_non_canonical_address_is_refused_at_write_time():
    with pytest.raises(ValueError, match="refusing to write"):
        exports._written("fe80::1%1\n-I INPUT 1 -j ACCEPT")

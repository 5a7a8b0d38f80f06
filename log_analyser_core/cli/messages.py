"""What the CLI says on stderr after a run: the next steps, why --fail-on fired, which files it wrote.

Plain functions returning text; the CLI prints them (and -q silences them).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from log_analyser_core.results import AnalysisResult, Severity, flagged_findings

MAX_NAMED = 5   # clients named in the --fail-on line; the rest are counted
BLOCKLISTS = frozenset({"blocklist", "nginx", "apache", "iptables", "ip6tables", "nftables", "crowdsec"})


def table_width(flag: int | None, is_terminal: bool, terminal_columns: int,
                environ: Mapping[str, str] | None = None) -> int | None:
    """The table's width: ``--width``, else ``COLUMNS``, else the terminal's; None (never cut) for a
    file or a pipe."""
    environ = os.environ if environ is None else environ
    if flag is not None:
        return flag
    columns = environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return terminal_columns if is_terminal else None


def next_steps(result: AnalysisResult, outputs: Sequence[str], enriched: bool, has_abuseipdb_key: bool,
               details: Sequence[str] = ()) -> list[str]:
    """One or two hints that fit the run: look closer at the top client, write a report to dig in,
    add reputation when no key is set."""
    flagged = flagged_findings(result.findings)
    hints: list[str] = []
    if flagged and not details:
        top = flagged[0]
        hints.append(f"hint: log_analyser {_files(result)} --details {_shell_word(top.ip)}   "
                     f"shows why #{top.rank} was flagged")
    if flagged and not any(path.endswith((".html", ".htm", ".pdf")) for path in outputs):
        hints.append("hint: add -o report.html for a dashboard to explore, or -o report.pdf to share")
    elif flagged and not enriched and not has_abuseipdb_key:
        hints.append("hint: --enrich adds country and network; set ABUSEIPDB_API_KEY for reputation too")
    return hints[:2]


def _files(result: AnalysisResult) -> str:
    sources = result.summary.sources
    if not sources or "-" in sources:   # standard input cannot be read again: the user names it
        return "-f LOG"
    return "-f " + " ".join(_shell_word(s) for s in sources[:3]) + (" ..." if len(sources) > 3 else "")


def _shell_word(text: str) -> str:
    """``text`` as one shell word; anything but a plain path or address is quoted (and escaped)."""
    import shlex

    from reporting import terminal_safe

    return shlex.quote(terminal_safe(text))


def fail_on_line(result: AnalysisResult, fail_on: Severity) -> str | None:
    """Why the exit code is 10: the clients at or above ``fail_on``; None when it is not."""
    hits = list(result.at_least(fail_on))
    if not hits:
        return None
    from reporting import terminal_safe

    named = ", ".join(f"{terminal_safe(f.ip)} ({f.severity.label})" for f in hits[:MAX_NAMED])
    more = f" and {len(hits) - MAX_NAMED:,} more" if len(hits) > MAX_NAMED else ""
    noun = "client is" if len(hits) == 1 else "clients are"
    return f"fail-on {fail_on.label}: {len(hits):,} {noun} {fail_on.label} or worse: {named}{more} (exit code 10)"


def wrote_line(kind: str, path: str, result: AnalysisResult, listed: int | None = None) -> str:
    """'wrote report.csv (43 clients)'; blocklists and the table count the clients they list (``listed``)."""
    from reporting import terminal_safe

    if kind in BLOCKLISTS or kind in ("table", "ecs", "junit", "markdown"):
        count = listed if listed is not None else len(flagged_findings(result.findings))
        what = f"{count:,} {'client' if count == 1 else 'clients'}"
        what += " listed" if kind in BLOCKLISTS or kind == "table" else " flagged"
    else:
        what = f"{len(result.findings):,} {'client' if len(result.findings) == 1 else 'clients'}"
    return f"wrote {terminal_safe(path)} ({what})"


def blocked_count(result: AnalysisResult, severity: Severity) -> int:
    """How many addresses a blocklist at ``severity`` lists (as exports.blocked keeps them)."""
    from log_analyser_core.parsing import address
    from log_analyser_core.results import AttackType

    return sum(1 for f in result.at_least(severity)
               if set(f.attack_types) != {AttackType.CRAWLER.value} and address.canonical(f.ip) is not None)

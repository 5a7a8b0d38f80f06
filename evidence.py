"""The vocabulary every detection stage shares: severities, the attack-type taxonomy, and the
evidence a stage attaches to a client (which rule, how often, and example log lines).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.IntEnum):
    """Finding severities, ordered so that comparisons mean 'at least as severe'."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of {names})") from None


class AttackType(enum.StrEnum):
    """One taxonomy, used in JSON ``attack_types``, CSV, reports and evaluation."""

    SQLI = "sqli"
    XSS = "xss"
    PATH_TRAVERSAL = "path_traversal"
    RCE = "rce"                          # command injection, RCE/CVE exploit probes, log4shell
    SCANNER = "scanner"                  # vulnerability scanners
    DIR_BRUTEFORCE = "dir_bruteforce"    # content discovery
    BRUTE_FORCE = "brute_force"          # many login attempts from one client
    CREDENTIAL_STUFFING = "credential_stuffing"
    DOS = "dos"                          # request floods
    BAD_BOT = "bad_bot"                  # scrapers, secret-file probes, fake crawlers
    DATA_EXFILTRATION = "data_exfiltration"
    CRAWLER = "crawler"                  # well-behaved known crawlers: not attackers


# Shown wherever an example line is not the logged text (the writers mark it; see ExampleLine.rebuilt).
REBUILT_MARK = "rebuilt"
REBUILT_NOTE = ("not the logged line: rebuilt in combined format from the parsed fields, because its input could "
                "not be read again (standard input, or a file no longer at that path); times are written "
                "at offset +0000, and fields the log's format has beyond the combined ones are not shown")


@dataclass(frozen=True)
class ExampleLine:
    """A log line that supports a piece of evidence, with where it came from.

    ``rebuilt`` is True when ``raw`` is not the logged text but a combined-format line rebuilt from
    the event's parsed fields (``log_input.rebuilt_line``), as for lines read from standard input.
    """

    source: str
    line_number: int
    raw: str
    rebuilt: bool = False


@dataclass(frozen=True)
class Evidence:
    """One detection stage's finding about one client.

    ``kind`` names the stage ("rule", "signature", "sigma", "reputation", ...); ``rule_id`` and
    ``title`` identify what matched; ``count`` is how many requests matched.
    """

    kind: str
    rule_id: str
    title: str
    severity: Severity
    attack_type: AttackType | None
    count: int
    examples: tuple[ExampleLine, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reputation:
    """What a reputation service says of an address. ``status`` is "ok" when the lookup
    answered; "unknown" (failed lookup: never a score of 0) or "skipped" (not looked up)."""

    status: str
    abuse_score: int | None = None       # 0-100 abuse confidence
    total_reports: int | None = None
    last_reported: str | None = None     # ISO 8601
    usage_type: str | None = None
    isp: str | None = None
    domain: str | None = None
    is_tor: bool | None = None
    detail: str | None = None            # why it is unknown or skipped


@dataclass(frozen=True)
class Geo:
    """Offline country and network owner of an address; fields are None when unknown."""

    country: str | None = None           # ISO 3166-1 alpha-2
    asn: int | None = None
    as_org: str | None = None


@dataclass(frozen=True)
class LLMNote:
    """A language model's advisory note on a finding. It never changes a score, flag or
    severity; ``status`` says whether the answer was valid ("ok") or why it was set aside."""

    status: str
    model: str
    summary: str | None = None
    attack_type: str | None = None
    severity: str | None = None
    confidence: float | None = None
    recommended_actions: tuple[str, ...] = ()
    detail: str | None = None            # why the answer was set aside or is missing

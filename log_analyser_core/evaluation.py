"""Detection quality against per-IP labels (the ``log_analyser evaluate`` subcommand is cli/evaluate.py).

Labels are a CSV with ``ip,label,attack_type`` (label ``attack`` or ``benign``; attack_type one of
evidence.AttackType for attacks). A labelled attacker is detected when its finding is flagged; its
type is right when the finding's primary (first) attack type equals the label's. Benign clients
that are flagged are false positives.
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from log_analyser_core.errors import InputError
from log_analyser_core.results import AttackType

NOT_FLAGGED = "-"
BENIGN = "benign"


@dataclass(frozen=True)
class Label:
    ip: str
    attack: bool
    attack_type: str          # "" for benign clients


@dataclass(frozen=True)
class Scores:
    """Per-IP detection quality; rates are in [0, 1] and None when undefined (no such clients)."""

    attackers: int
    benign: int
    true_positives: int
    false_positives: int
    precision: float | None
    recall: float | None
    false_positive_rate: float | None
    type_accuracy: float | None                  # among detected attackers labelled with a type
    recall_by_type: dict[str, float]
    confusion: dict[str, dict[str, int]]         # true type (or benign) -> predicted primary type -> count
    missing: list[str] = field(default_factory=list)   # labelled ips absent from the log
    unlabelled: int = 0                          # clients in the log with no label


def read_labels(path: str | Path) -> list[Label]:
    """Labels from a CSV file; raises InputError naming the line of a bad row."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels: {exc}", path=str(path)) from None
    if not rows or not {"ip", "label"} <= set(rows[0]):
        raise InputError("labels need a header with ip,label,attack_type", path=str(path))
    known = {t.value for t in AttackType}
    labels = []
    for number, row in enumerate(rows, start=2):
        label, kind = (row.get("label") or "").strip().lower(), (row.get("attack_type") or "").strip().lower()
        if label not in {"attack", BENIGN} or (label == "attack" and kind and kind not in known):
            raise InputError(f"bad label {label!r} / attack_type {kind!r}", path=str(path), line=number,
                             hint="label is attack or benign; attack_type one of " + ", ".join(sorted(known)))
        attack = label == "attack"
        labels.append(Label(ip=row["ip"].strip(), attack=attack, attack_type=kind if attack else ""))
    return labels


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def score(findings, labels: list[Label]) -> Scores:
    """Compare findings (analysis.Finding: ip, flagged, attack_types) with labels."""
    by_ip = {f.ip: f for f in findings}
    present = [label for label in labels if label.ip in by_ip]
    confusion: dict[str, Counter] = {}
    tp = fp = typed = typed_right = 0
    found_by_type: Counter = Counter()
    for label in present:
        finding = by_ip[label.ip]
        predicted = (finding.attack_types[0] if finding.attack_types else "unknown") if finding.flagged else NOT_FLAGGED
        truth = label.attack_type or ("attack" if label.attack else BENIGN)
        confusion.setdefault(truth, Counter())[predicted] += 1
        if label.attack and finding.flagged:
            tp += 1
            found_by_type[truth] += 1
            typed += bool(label.attack_type)   # attacks labelled without a type count for recall only
            typed_right += bool(label.attack_type) and predicted == label.attack_type
        fp += (not label.attack) and finding.flagged
    attackers = sum(label.attack for label in present)
    benign = len(present) - attackers
    per_type = Counter(label.attack_type or "attack" for label in present if label.attack)
    return Scores(
        attackers=attackers, benign=benign, true_positives=tp, false_positives=fp,
        precision=_rate(tp, tp + fp), recall=_rate(tp, attackers), false_positive_rate=_rate(fp, benign),
        type_accuracy=_rate(typed_right, typed),
        recall_by_type={kind: round(found_by_type[kind] / n, 4) for kind, n in sorted(per_type.items())},
        confusion={truth: dict(sorted(row.items())) for truth, row in sorted(confusion.items())},
        missing=sorted(label.ip for label in labels if label.ip not in by_ip),
        unlabelled=len(set(by_ip) - {label.ip for label in labels}))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render(scores: Scores) -> str:
    """The human report: headline rates, recall per type, and the confusion table."""
    lines = [f"attackers {scores.attackers}, benign {scores.benign}, detected {scores.true_positives}, "
             f"false positives {scores.false_positives}",
             f"precision {_fmt(scores.precision)}  recall {_fmt(scores.recall)}  "
             f"false-positive rate {_fmt(scores.false_positive_rate)}  type accuracy {_fmt(scores.type_accuracy)}",
             "", "recall by attack type:"]
    lines += [f"  {kind:<20} {_fmt(value)}" for kind, value in scores.recall_by_type.items()]
    columns = sorted({p for row in scores.confusion.values() for p in row})
    lines += ["", "confusion (rows: label, columns: predicted primary type, '-' = not flagged):",
              " " * 22 + " ".join(columns)]
    for truth, row in scores.confusion.items():
        lines.append(f"  {truth:<20}" + " ".join(f"{row.get(c, 0):>{max(len(c), 5)}}" for c in columns))
    if scores.missing:
        lines.append(f"\n{len(scores.missing)} labelled ip(s) not in the log, e.g. {scores.missing[0]}")
    if scores.unlabelled:
        lines.append(f"{scores.unlabelled} client(s) in the log have no label and are not counted")
    return "\n".join(lines) + "\n"

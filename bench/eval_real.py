"""Detection on the shared real logs (../shared/data/public beside the checkout): what gets flagged, as what.

* ocatak_apache-http-logs: three scanner runs; every scanner IP must be flagged as ``scanner``.
* nielsbasjes_yauaa: every client is a form-spam / break-in bot; the share flagged is the recall.
* elastic_examples, slrbl_webhawk: real unlabelled traffic; flagged clients are listed by type so the
  false positives can be read.

    python bench/eval_real.py [--data ../shared/data/public] [--show 5]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from log_analyser_core.pipeline import analyse  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "public"
SCANNER_IPS = {"acunetix.txt": {"192.168.4.25"}, "netsparker.txt": {"192.168.4.164"},
               "w3af.txt": {"192.168.4.163", "192.168.1.20"}}   # 192.168.4.25 there is the operator, browsing DVWA


def report(name: str, path: Path, show: int) -> dict:
    result = analyse([str(path)])
    flagged = [f for f in result.findings if f.flagged]
    types = Counter(f.attack_types[0] if f.attack_types else "unknown" for f in flagged)
    share = len(flagged) / max(len(result.findings), 1)
    print(f"{name}: {len(result.findings)} clients, {len(flagged)} flagged ({share:.1%}) {dict(types.most_common())}")
    for finding in flagged[:show]:
        print(f"    {finding.ip:<16} {finding.score:5.1f} {','.join(finding.attack_types)}: "
              f"{finding.reasons[0] if finding.reasons else ''}"[:150])
    return {f.ip: f for f in result.findings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--show", type=int, default=5, help="flagged clients listed per log")
    args = parser.parse_args()
    missed = []
    for name, ips in SCANNER_IPS.items():
        findings = report(f"ocatak/{name}", args.data / "ocatak_apache-http-logs" / name, args.show)
        missed += [f"{name}:{ip}" for ip in ips
                   if not (findings[ip].flagged and findings[ip].attack_types[:1] == ("scanner",))]
    print(f"scanner IPs not flagged as scanner: {missed or 'none'}")
    report("yauaa/hackers-access.log (all bots)", args.data / "nielsbasjes_yauaa" / "hackers-access.log", args.show)
    report("elastic/apache_logs", args.data / "elastic_examples" / "apache_logs", args.show)
    for path in sorted((args.data / "slrbl_webhawk").glob("*.log*")):
        report(f"webhawk/{path.name}", path, args.show)


if __name__ == "__main__":
    main()

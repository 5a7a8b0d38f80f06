"""The GitHub Action's entry point (action.yml): inputs in, log_analyser run, outputs out.

``python -m log_analyser_core.cli.action``: GitHub hands the action's inputs over as INPUT_<NAME>
environment variables (INPUT_LOGS, INPUT_FAIL-ON, ...). LOGS and ARGS are split like a shell would; an
empty fail-on, report or junit turns that part off. The report paths are written to $GITHUB_OUTPUT
(``report``, ``junit``) and the exit code is the analyser's, so ``fail-on`` fails the step. The
Markdown summary goes to $GITHUB_STEP_SUMMARY, as on any run where that variable is set.
"""
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping

from log_analyser_core.errors import ConfigError, ExitCode


def analyser_argv(logs: str, fail_on: str, report: str, junit: str, extra: str) -> list[str]:
    """The log_analyser arguments for the action's inputs."""
    files = shlex.split(logs)
    if not files:
        raise ConfigError("the action's 'logs' input is empty", hint="e.g. logs: /var/log/nginx/access.log*")
    argv = ["-f", *files]
    for path in (report, junit):
        if path.strip():
            argv += ["-o", path.strip()]
    if fail_on.strip():
        argv += ["--fail-on", fail_on.strip()]
    return argv + shlex.split(extra)


def write_outputs(report: str, junit: str, code: int, environ: Mapping[str, str] | None = None) -> None:
    """``report``, ``junit`` and ``exit-code`` as step outputs (GITHUB_OUTPUT's name=value lines)."""
    environ = os.environ if environ is None else environ
    path = environ.get("GITHUB_OUTPUT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        for name, value in (("report", report.strip()), ("junit", junit.strip()), ("exit-code", str(code))):
            handle.write(f"{name}={value.replace(chr(10), ' ')}\n")


def inputs(environ: Mapping[str, str]) -> dict[str, str]:
    """The action's inputs from GitHub's INPUT_<NAME> variables (missing ones empty)."""
    return {name: environ.get(f"INPUT_{name.upper()}", "") for name in ("logs", "fail-on", "report", "junit", "args")}


def main(environ: Mapping[str, str] | None = None) -> int:
    import log_analyser

    given = inputs(os.environ if environ is None else environ)
    try:
        command = analyser_argv(given["logs"], given["fail-on"], given["report"], given["junit"], given["args"])
    except (ConfigError, ValueError) as exc:   # ValueError: shlex on an unclosed quote
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    code = log_analyser.main(command)
    write_outputs(given["report"], given["junit"], code, environ)
    return code


if __name__ == "__main__":
    sys.exit(main())

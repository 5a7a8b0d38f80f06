"""The error hierarchy shared by every pipeline stage, and the CLI's exit codes.

Library code raises these; only the CLI turns them into a one-line message and an exit code.
"""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, documented in ``--help`` and the README."""

    OK = 0
    USAGE = 2
    INPUT = 3
    RULES = 4
    FINDINGS = 10
    INTERNAL = 70
    INTERRUPTED = 130


class AnalyserError(Exception):
    """Base of every expected failure; ``hint`` tells the user what to do about it."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None, path: str | None = None,
                 line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = path
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        text = f"{where}{self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(AnalyserError):
    """Invalid settings, flags or configuration files."""

    exit_code = ExitCode.USAGE


class SettingError(ConfigError):
    """A setting out of its range. The message is ``template`` with the names of the settings it is
    about (``names``) in its ``{}`` fields, so that the CLI can name its flags instead (``render``)."""

    def __init__(self, template: str, *names: str, hint: str | None = None) -> None:
        self.template = template
        self.names = names
        super().__init__(self.render(str), hint=hint)

    def render(self, label) -> str:
        """The message with each setting named by ``label(name)`` (e.g. threshold -> --threshold)."""
        return self.template.format(*(label(name) for name in self.names))


def shown(value: object) -> str:
    """A value as a SettingError template shows it: repr for text (written by the user), braces kept."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text.replace("{", "{{").replace("}", "}}")


class InputError(AnalyserError):
    """An input that cannot be read or parsed: missing, unreadable, empty, corrupt, wrong format."""

    exit_code = ExitCode.INPUT


class RulesError(AnalyserError):
    """A detection rule file that does not load or validate."""

    exit_code = ExitCode.RULES
    problems: list[str]  # set by behaviour_rules.load_rules: every problem found, one string each


IMAGE_MARKER = ".log_analyser-image"   # the Dockerfile leaves this file in the image's virtual environment
IMAGE_EXTRAS = ("llm",)                # the default image's extras; its -full variant adds deep


def installed_by(prefix: str | None = None) -> str:
    """How this copy was installed: 'docker' (the image: ``prefix``, default sys.prefix, holds
    IMAGE_MARKER), 'pipx' (``prefix`` is one of pipx's venvs, .../pipx/venvs/NAME) or 'pip'."""
    import sys
    from pathlib import Path

    root = Path(prefix or sys.prefix)
    if (root / IMAGE_MARKER).exists():
        return "docker"
    parts = root.parts
    if len(parts) >= 3 and parts[-2] == "venvs" and "pipx" in parts[-3]:
        return "pipx"
    return "pip"


def install_hint(extra: str, how: str | None = None) -> str:
    """The command that adds an optional extra, for the way the tool was installed (installed_by).
    log_analyser is not on PyPI: it is installed from a clone of its repository or used as the
    Docker image, so the extra is named on the source tree or as the image's full variant."""
    how = how or installed_by()
    if how == "docker" and extra == "deep":
        return ("use the image's full variant (tag full), or build it: "
                "docker build --target runtime --build-arg VARIANT=full -t log_analyser:full .")
    if how == "docker":
        return f"no image variant has it: pip install '.[{extra}]' in the log_analyser source tree"
    if how == "pipx":
        return f"pipx install --force '.[{extra}]' in the log_analyser source tree"
    return f"pip install '.[{extra}]' in the log_analyser source tree"


class MissingExtraError(AnalyserError):
    """An optional dependency is not installed; the hint names the ``pip install`` that fixes it."""

    exit_code = ExitCode.USAGE

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(f"{feature} needs the '{module}' package, which is not installed",
                         hint=install_hint(extra))

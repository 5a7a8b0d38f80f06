"""Settings layers under the command line: defaults < config file < environment < flags.

The CLI's argparse parser declares every option once. This module finds the same options in a
TOML config file (``threshold = 60``, ``fail_on = "high"``) and in ``LOG_ANALYSER_<OPTION>``
environment variables (``LOG_ANALYSER_THRESHOLD=60``, also read from a ``.env`` file), converts
them with the option's own type, and applies each one unless the flag itself was typed.
Keys are the long option names with dashes or underscores; options added to the parser later
become configurable without changes here.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import shlex
import tomllib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from log_analyser_core.errors import ConfigError

log = logging.getLogger(__name__)

APP_NAME = "log_analyser"
ENV_PREFIX = "LOG_ANALYSER_"
CONFIG_ENV = "LOG_ANALYSER_CONFIG"
# Options that only make sense on the command line: where to read, which files configure.
NOT_CONFIGURABLE = frozenset({"help", "version", "files", "config", "env_file"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})

ParserFactory = Callable[[], argparse.ArgumentParser]


def default_config_path() -> Path:
    """The per-user config file: ``$XDG_CONFIG_HOME/log_analyser/config.toml`` on Linux."""
    import platformdirs

    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def configurable_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config key (long option name, underscores) -> the parser action that reads it."""
    options = {}
    for action in parser._actions:  # argparse exposes no public list of its actions
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in NOT_CONFIGURABLE:
            options[longs[0][2:].replace("-", "_")] = action
    return options


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML table in ``path``; a missing, unreadable or invalid file is a ConfigError."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", path=str(path),
                          hint="check --config or LOG_ANALYSER_CONFIG") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=str(path)) from None


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a ``.env`` file (python-dotenv syntax); keys without a value are left out."""
    from dotenv import dotenv_values

    if not path.is_file():
        raise ConfigError("env file not found", path=str(path), hint="check --env-file")
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def _parse_bool(raw: object, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigError(f"{where}: expected true or false, not {raw!r}")


def _fits_number_type(kind: object, raw: object) -> bool:
    """False for TOML values that int() or float() would silently bend: booleans, 1.5 for an integer."""
    if kind not in (int, float) or not isinstance(raw, (int, float)):
        return True
    return not isinstance(raw, bool) and (kind is float or float(raw).is_integer())


def _convert_one(action: argparse.Action, raw: object, where: str) -> object:
    if isinstance(raw, (list, dict)):
        raise ConfigError(f"{where}: expected a single value, not {type(raw).__name__}")
    value: object = raw
    if not _fits_number_type(action.type, raw):
        kind = "a whole number" if action.type is int else "a number"
        raise ConfigError(f"{where}: expected {kind}, not {raw!r}")
    if callable(action.type):
        try:
            argument: Any = raw if isinstance(raw, str) or action.type in (int, float) else str(raw)
            value = action.type(argument)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: invalid value {raw!r} ({exc})") from None
    elif not isinstance(raw, str):
        value = str(raw)
    if action.choices is not None and value not in action.choices:
        allowed = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: invalid choice {raw!r} (choose from {allowed})")
    return value


def _count_type(action: argparse.Action) -> argparse.Action:
    """A stand-in action that reads a count option's value as a whole number."""
    return argparse.Action(action.option_strings, action.dest, type=int)


def convert(action: argparse.Action, raw: object, where: str) -> object:
    """``raw`` (a TOML value or an environment string) as the parser would have stored it."""
    if isinstance(action, argparse.BooleanOptionalAction):  # --x / --no-x
        return _parse_bool(raw, where)
    if isinstance(action, argparse._CountAction):  # -v -v: a level
        return _convert_one(_count_type(action), raw, where)
    if action.nargs == 0:  # store_true / store_false / store_const flags
        flag = _parse_bool(raw, where)
        return action.const if flag else action.default
    if isinstance(action, (argparse._AppendAction, argparse._ExtendAction)):
        items = shlex.split(raw) if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise ConfigError(f"{where}: expected a list, not {raw!r}")
        return [_convert_one(action, item, where) for item in items]
    return _convert_one(action, raw, where)


def values_from_config(data: Mapping[str, Any], options: Mapping[str, argparse.Action],
                       path: Path) -> dict[str, object]:
    """Parser dest -> value for every key of a config file; an unknown key is a ConfigError."""
    values = {}
    for key, raw in data.items():
        name = key.replace("-", "_")
        if name not in options:
            close = difflib.get_close_matches(name, options, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(options))}"
            raise ConfigError(f"unknown setting '{key}'", path=str(path), hint=hint)
        values[options[name].dest] = convert(options[name], raw, f"{path}: {key}")
    return values


def values_from_environment(environ: Mapping[str, str],
                            options: Mapping[str, argparse.Action]) -> dict[str, object]:
    """Parser dest -> value for every set ``LOG_ANALYSER_<KEY>`` variable; others are ignored."""
    values = {}
    for key, action in options.items():
        name = ENV_PREFIX + key.upper()
        if name in environ:
            values[action.dest] = convert(action, environ[name], name)
    return values


def explicit_dests(parser_factory: ParserFactory, argv: Sequence[str]) -> set[str]:
    """The dests the user typed on the command line (parsed again with every default suppressed)."""
    parser = parser_factory()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(list(argv))))


def _config_path(args: argparse.Namespace, environ: Mapping[str, str]) -> Path | None:
    explicit = getattr(args, "config", None) or environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    default = default_config_path()
    return default if default.is_file() else None


def load_env_file(args: argparse.Namespace, environ: MutableMapping[str, str], cwd: Path) -> None:
    """Add the ``.env`` file's variables (``--env-file``, else ``./.env`` if present) to ``environ``.

    Variables already set win over the file, as with docker's and python-dotenv's conventions;
    secrets such as ``ABUSEIPDB_API_KEY`` reach the later stages this way.
    """
    path = getattr(args, "env_file", None)
    path = Path(path).expanduser() if path else cwd / ".env"
    if getattr(args, "env_file", None) is None and not path.is_file():
        return
    for key, value in read_env_file(path).items():
        environ.setdefault(key, value)
    log.debug("read environment file %s", path)


def parse_arguments(parser_factory: ParserFactory, argv: Sequence[str],
                    environ: MutableMapping[str, str] | None = None, cwd: Path | None = None) -> argparse.Namespace:
    """Parse ``argv`` and fill every option not typed from the environment, then the config file.

    ``environ`` defaults to ``os.environ`` and receives the ``.env`` file's variables;
    ``cwd`` (default: the working directory) is where ``.env`` is looked for.
    """
    environ = os.environ if environ is None else environ
    parser = parser_factory()
    args = parser.parse_args(list(argv))
    load_env_file(args, environ, Path.cwd() if cwd is None else cwd)
    options = configurable_options(parser)
    config_path = _config_path(args, environ)
    layers: dict[str, object] = {}
    if config_path is not None:
        layers.update(values_from_config(read_config_file(config_path), options, config_path))
        log.debug("read config file %s", config_path)
    layers.update(values_from_environment(environ, options))
    typed = explicit_dests(parser_factory, argv)
    for dest, value in layers.items():
        if dest not in typed:
            setattr(args, dest, value)
    return args

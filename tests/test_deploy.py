"""deploy/: what can be checked without a container engine (none runs on this project's
machines) or a systemd host: every command the Dockerfile, compose.yaml and the units run is
one the CLI takes, and the image's health check asks the route that answers liveness."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CLI = str(Path(sys.executable).parent / "scim-server")


def _docker_commands() -> list[list[str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["scim-server"]
    return [cmd]


def _compose_commands() -> list[list[str]]:
    text = (DEPLOY / "compose.yaml").read_text()
    return [json.loads(found) for found in re.findall(r"^\s+command: (\[.*\])$", text, re.M)]


def _unit_commands() -> list[list[str]]:
    found = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                program, *args = line.split("=", 1)[1].split()
                assert program == "/opt/scim-server/bin/scim-server"
                found.append(args)
    return found


COMMANDS = _docker_commands() + _compose_commands() + _unit_commands()


def test_every_deployment_runs_the_commands_it_needs() -> None:
    runs = {tuple(c) for c in COMMANDS}
    assert ("serve", "--no-sync") in runs and ("worker",) in runs and ("db", "upgrade") in runs


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_the_cli_takes_each_command_the_deployments_run(command: list[str]) -> None:
    done = subprocess.run([CLI, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_image_checks_liveness_and_runs_as_a_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "/healthz" in text.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"^USER scim$", text, re.M)
    assert text.count("FROM ") == 2  # build stage, then the runtime stage

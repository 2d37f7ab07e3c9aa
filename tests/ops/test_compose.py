"""ops/compose.yaml: the switch with PostgreSQL and Prometheus. Without Docker here,
what can be checked is: it parses; each service's command is one that exists (the
switch's own command line parses and its config file validates, Prometheus's files
pass promtool); every file it mounts or builds from is in the repository; its ports
and the config's agree."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from switch import cli
from switch.config import load_config
from tests.conftest import REPO
from tests.ops.conftest import OPS


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((OPS / "compose.yaml").read_text())
    return document


def test_compose_has_the_switch_postgresql_and_prometheus() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "switch", "prometheus"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["switch"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prometheus"]["network_mode"] == "service:switch"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (OPS / source).exists(), f"{name} mounts {source}, not in ops/"
    build = services["switch"]["build"]
    context = (OPS / build["context"]).resolve()
    assert context == REPO and (context / build["dockerfile"]).is_file()


def test_the_dockerfile_copies_what_exists_and_runs_the_compose_command() -> None:
    dockerfile = (OPS / "Dockerfile").read_text().splitlines()
    for line in dockerfile:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
    [cmd] = [line for line in dockerfile if line.startswith("CMD ")]
    command = compose()["services"]["switch"]["command"]
    assert yaml.safe_load(cmd.removeprefix("CMD ")) == command


def _switch_config(tmp_path: Path, *, any_port: bool = False) -> Path:
    """The compose's switch.toml with the image's paths (/opt/payswitch, the state
    volume) made this checkout's and a temporary folder's; ``any_port``: its listeners
    on port 0, so that a demo running on this machine does not fail the check."""
    text = (OPS / "compose" / "switch.toml").read_text()
    text = text.replace("/opt/payswitch", str(REPO)).replace("/var/lib/payswitch", str(tmp_path))
    if any_port:
        text = re.sub(r"(?m)^port = \d+$", "port = 0", text)
    path = tmp_path / "switch.toml"
    path.write_text(text)
    return path


def test_the_switch_command_parses_and_its_config_validates(tmp_path: Path) -> None:
    service = compose()["services"]["switch"]
    command = service["command"]
    assert command[0] == "switch"  # the console script of pyproject.toml
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["switch"] == "switch.cli:main"
    arguments = cli._parser().parse_args(command[1:])
    assert arguments.handler is cli._run
    assert arguments.config == "/etc/payswitch/switch.toml"
    mounted = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"] if ":" in v}
    assert mounted["/etc/payswitch/switch.toml"] == "./compose/switch.toml"
    environment = service["environment"]
    config = load_config(_switch_config(tmp_path))
    assert config.journal.backend == "postgresql"
    assert config.journal.dsn_env in environment
    assert "@postgres:5432/" in environment[config.journal.dsn_env]
    published = {int(port.split(":")[1]) for port in service["ports"]}
    assert config.pos.port in published
    # Prometheus shares the switch's network: the admin interface on loopback, where
    # its scrape and the health check look.
    prometheus = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    [target] = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == f"{config.admin.host}:{config.admin.port}"
    assert f":{config.admin.port}/readyz" in " ".join(service["healthcheck"]["test"])


@pytest.mark.slow  # a switch process
def test_the_switch_command_checks_its_config(tmp_path: Path, postgres_dsn: str) -> None:
    """`switch config check` of the compose's config, its journal's DSN (the variable
    the compose sets) naming a real PostgreSQL database."""
    service = compose()["services"]["switch"]
    config = _switch_config(tmp_path, any_port=True)
    [variable] = service["environment"]
    environment = {**os.environ, variable: postgres_dsn}
    check = subprocess.run(
        [sys.executable, *shlex.split("-m switch config check --config"), str(config)],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_command_names_the_mounted_files(promtool: Path) -> None:
    service = compose()["services"]["prometheus"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in service["command"])
    mounted = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    config = mounted[flags["config.file"]]
    assert (OPS / config).is_file()
    rules = yaml.safe_load((OPS / config).read_text())["rule_files"]
    for rule_file in rules:
        assert f"/etc/prometheus/{rule_file}" in mounted
    checked = subprocess.run([str(promtool), "check", "config", str(OPS / config)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


"""docker-compose.yml describes the multi-host topology and stays valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_topology_has_every_service_and_nodes_scale() -> None:
    """nats, scheduler, gateway and browser-node exist; browser-node can be --scale'd."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"nats", "scheduler", "gateway", "browser-node"} <= services.keys()
    node = services["browser-node"]
    assert "container_name" not in node, "a fixed container name prevents --scale"
    assert not node.get("ports"), "a fixed host port prevents --scale"
    for name in ("scheduler", "gateway", "browser-node"):
        env = services[name].get("environment", {})
        keys = env.keys() if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}
        assert any(key.startswith("SMARTFLEET_") for key in keys), (
            f"{name} is configured by SMARTFLEET_*"
        )


def test_compose_config_validates() -> None:
    """`docker compose config` (or docker-compose v1) accepts the file when a client is installed."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose", "-f", str(COMPOSE), "config", "-q"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose", "-f", str(COMPOSE), "config", "-q"]
    else:
        pytest.skip("no docker compose client installed")
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={"SMARTFLEET_TOKEN": "t", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr

"""docker-compose.yml describes the multi-host topology and stays valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _env(service: dict[str, object]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, dict):
        return {str(key): str(value) for key, value in env.items()}
    return dict(str(item).split("=", 1) for item in env)  # type: ignore[union-attr]


def test_topology_has_every_service_and_nodes_scale() -> None:
    """Three NATS servers, PostgreSQL, two schedulers, a gateway and browser nodes exist;
    browser-node can be --scale'd; the services are configured by SMARTFLEET_*."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {
        "nats-1",
        "nats-2",
        "nats-3",
        "postgres",
        "scheduler-a",
        "scheduler-b",
        "gateway",
        "browser-node",
    } <= services.keys()
    node = services["browser-node"]
    assert "container_name" not in node, "a fixed container name prevents --scale"
    assert not node.get("ports"), "a fixed host port prevents --scale"
    for name in ("scheduler-a", "scheduler-b", "gateway", "browser-node"):
        assert any(key.startswith("SMARTFLEET_") for key in _env(services[name])), (
            f"{name} is configured by SMARTFLEET_*"
        )


def test_the_cluster_is_replicated_and_every_client_knows_every_scheduler() -> None:
    """The NATS servers route to each other, the stream is R3, both schedulers share one
    PostgreSQL, gateways and nodes list both schedulers, and every long-running service has a
    healthcheck."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("nats-1", "nats-2", "nats-3"):
        command = services[name]["command"]
        routes = command[command.index("--routes") + 1]
        assert routes.count("nats://") == 3, command
    schedulers = [services["scheduler-a"], services["scheduler-b"]]
    urls = {_env(each)["SMARTFLEET_DATABASE_URL"] for each in schedulers}
    assert len(urls) == 1 and next(iter(urls)).startswith("postgresql+asyncpg://")
    for each in schedulers:
        env = _env(each)
        assert env["SMARTFLEET_NATS_REPLICAS"] == "3"
        assert env["SMARTFLEET_NATS_URL"].count("nats://") == 3
    advertised = {_env(each)["SMARTFLEET_SCHEDULER_ADVERTISE"] for each in schedulers}
    for client in ("gateway", "browser-node"):
        listed = set(_env(services[client])["SMARTFLEET_SCHEDULER_ADDR"].split(","))
        assert listed == advertised, f"{client} lists {listed}, schedulers advertise {advertised}"
    for name, service in services.items():
        if service.get("restart", "unless-stopped") != "no" and "profiles" not in service:
            assert "healthcheck" in service, f"{name} has no healthcheck"
    # SIGTERM drains a node: compose must give it longer than the node's grace.
    node = services["browser-node"]
    assert node["stop_grace_period"] == "30s"
    assert _env(node)["SMARTFLEET_SHUTDOWN_GRACE"] == "20s"


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

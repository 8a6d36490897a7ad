"""deploy/k8s/ is valid Kubernetes (checked against the API schemas) and wires what HA needs:
R3 NATS, two schedulers that every client lists, node drain on pod termination."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.durations import parse_duration

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def _validator() -> list[str]:
    """kubernetes-validate (PyPI, schemas bundled: works offline), else kubeconform."""
    found = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    if found:
        return [found, "--strict", "--quiet"]
    if shutil.which("kubeconform"):
        return ["kubeconform", "-strict", "-summary"]
    pytest.skip("neither kubernetes-validate nor kubeconform is installed (make setup installs it)")


def _resources() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found[(document["kind"], document["metadata"]["name"])] = document
    return found


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: str(item.get("value", "")) for item in container.get("env", [])}


def test_every_manifest_passes_the_schema_validator(tmp_path: Path) -> None:
    """The validator accepts every file, and refuses a manifest with a wrong field type."""
    command = _validator()
    accepted = subprocess.run([*command, *map(str, MANIFESTS)], capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text((K8S / "gateway.yaml").read_text().replace("replicas: 2", 'replicas: "two"'))
    refused = subprocess.run([*command, str(broken)], capture_output=True, text=True)
    assert refused.returncode != 0


def test_the_topology_is_replicated_and_drain_follows_termination() -> None:
    """Three NATS servers routed together, the stream at R3, two schedulers each advertising
    the name clients list, and a node grace period longer than its drain."""
    resources = _resources()
    nats = resources[("StatefulSet", "nats")]
    assert nats["spec"]["replicas"] == 3
    args = nats["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--routes") + 1].count("nats://") == 3
    scheduler = resources[("StatefulSet", "scheduler")]
    assert scheduler["spec"]["replicas"] == 2
    env = _env(scheduler["spec"]["template"]["spec"]["containers"][0])
    assert env["SMARTFLEET_NATS_REPLICAS"] == "3"
    assert env["SMARTFLEET_SCHEDULER_ADVERTISE"] == "$(POD_NAME).scheduler:50052"
    names = {f"scheduler-{i}.scheduler:50052" for i in range(2)}
    for kind, name in (("Deployment", "gateway"), ("Deployment", "browser-node")):
        container = resources[(kind, name)]["spec"]["template"]["spec"]["containers"][0]
        assert set(_env(container)["SMARTFLEET_SCHEDULER_ADDR"].split(",")) == names
    pod = resources[("Deployment", "browser-node")]["spec"]["template"]["spec"]
    node = pod["containers"][0]
    drain = parse_duration(_env(node)["SMARTFLEET_SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > drain.total_seconds() + 5
    assert "preStop" in node["lifecycle"]

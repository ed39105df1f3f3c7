"""The rendered Kubernetes manifests agree with the code: probes, security, settings, commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.cli import SERVICES

OVERLAYS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays"
pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is needed to render kustomize"
)


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=["dev", "production"])
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].removeprefix("routines-"): d for d in docs if d["kind"] == "Deployment"}


def test_every_service_has_a_deployment_with_probes_and_restricted_security(
    manifests: list[dict[str, Any]],
) -> None:
    found = deployments(manifests)
    assert set(found) == set(SERVICES)
    for deployment in found.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        (container,) = pod["containers"]
        # Liveness is the process alone; readiness is Postgres (NATS down is only degraded).
        assert container["startupProbe"]["httpGet"]["path"] == "/livez"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_required_settings_are_supplied(manifests: list[dict[str, Any]]) -> None:
    config = next(d for d in manifests if d["kind"] == "ConfigMap")["data"]
    for name, deployment in deployments(manifests).items():
        settings_model = SERVICES[name][0]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        supplied = set(config) | {e["name"] for e in container.get("env", [])}
        required = {
            f"ROUTINES_{field.upper()}"
            for field, info in settings_model.model_fields.items()
            if info.is_required()
        }
        assert required <= supplied, (name, required - supplied)
        for env in container.get("env", []):
            assert "secretKeyRef" in env.get("valueFrom", {}), env["name"]


def test_commands_exist_and_shutdown_fits_the_grace_period(manifests: list[dict[str, Any]]) -> None:
    config = next(d for d in manifests if d["kind"] == "ConfigMap")["data"]
    shutdown = float(config["ROUTINES_SHUTDOWN_TIMEOUT_SEC"])
    for deployment in deployments(manifests).values():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"][0] in SERVICES
        pre_stop = 5  # the preStop sleep
        closing = 10  # supervisor drain, NATS drain and pool close, bounded in shared/
        assert pre_stop + shutdown + closing <= pod["terminationGracePeriodSeconds"] + 10
        assert pre_stop + shutdown < pod["terminationGracePeriodSeconds"]
    job = next(d for d in manifests if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_production_scales_out_with_autoscalers() -> None:
    docs = render("production")
    for deployment in deployments(docs).values():
        assert deployment["spec"]["replicas"] >= 2
        assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert hpas == {"routines-api", "routines-webhook-gateway", "routines-run-dispatcher"}
    assert sum(d["kind"] == "PodDisruptionBudget" for d in docs) == 4

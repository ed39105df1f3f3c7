"""The rendered Kubernetes manifests agree with the code: probes, security, settings, commands."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.cli import SERVICES

OVERLAYS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays"


def kubectl() -> str:
    """kubectl renders the kustomizations. Missing, it is installed (CI starts on a fresh machine);
    if that fails the tests fail — they never skip, or a broken manifest would pass unseen."""
    found = shutil.which("kubectl")
    if found is None and shutil.which("apt-get") is not None:
        subprocess.run(["apt-get", "install", "-y", "kubectl"], capture_output=True, check=False)
        found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is needed to render the kustomize overlays: install it (apt-get install kubectl)"
        )
    return found


def render(overlay: str | Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=["dev", "production"])
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services' Deployments (the dev overlay also runs its own Postgres and NATS)."""
    return {
        d["metadata"]["name"].removeprefix("routines-"): d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/part-of") == "routines"
    }


def mounted_settings(pod: dict[str, Any], container: dict[str, Any]) -> set[str]:
    """ROUTINES_* settings a container reads from mounted Secret files (ROUTINES_SECRETS_DIR)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    names = set()
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret and mount["mountPath"] == "/etc/routines/secrets":
            names |= {item["path"].upper() for item in secret["items"]}
    return names


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
    config = next(
        d for d in manifests if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "routines-config"
    )["data"]
    assert config["ROUTINES_SECRETS_DIR"] == "/etc/routines/secrets"
    for name, deployment in deployments(manifests).items():
        settings_model = SERVICES[name][0]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (init,) = pod["initContainers"]
        assert init["args"][0] == "wait-schema"
        assert mounted_settings(pod, init) == mounted_settings(pod, container)
        supplied = (
            set(config) | {e["name"] for e in container.get("env", [])} | mounted_settings(pod, container)
        )
        required = {
            f"ROUTINES_{field.upper()}"
            for field, info in settings_model.model_fields.items()
            if info.is_required()
        }
        assert required <= supplied, (name, required - supplied)
        for env in container.get("env", []):
            assert "secretKeyRef" in env.get("valueFrom", {}), env["name"]


def test_commands_exist_and_shutdown_fits_the_grace_period(manifests: list[dict[str, Any]]) -> None:
    config = next(
        d for d in manifests if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "routines-config"
    )["data"]
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


def test_migration_job_is_named_after_the_release(manifests: list[dict[str, Any]]) -> None:
    """A Job's template is immutable: a new image needs a new Job name, or `kubectl apply` fails."""
    (job,) = [d for d in manifests if d["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    tag = container["image"].rsplit(":", 1)[1]
    assert job["metadata"]["name"] == "routines-migrate-" + tag
    for deployment in deployments(manifests).values():
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init["image"] == container["image"]  # waits for this very release's migrations
    volumes = job["spec"]["template"]["spec"]["volumes"]
    items = [i for v in volumes if "secret" in v for i in v["secret"]["items"]]
    assert items == [{"key": "migrate-database-url", "path": "routines_database_url"}]


def test_an_overlay_that_sets_the_image_gets_a_migration_job_of_that_release(tmp_path: Path) -> None:
    """The documented way to pick the image: `images:` in your own overlay, with the release-name
    replacement copied beside it (docs/operations.md). Re-applying with a new image then creates
    a new Job instead of failing on the old one's immutable template."""
    overlay = tmp_path / "mine"
    overlay.mkdir()
    shutil.copy(OVERLAYS.parent / "base" / "release-name.yaml", overlay / "release-name.yaml")
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(OVERLAYS / "production", overlay)],
                "images": [
                    {
                        "name": "ghcr.io/your-org/routines",
                        "newName": "registry.example.com/routines",
                        "newTag": "0.2.0-rc.1",
                    }
                ],
                "replacements": [{"path": "release-name.yaml"}],
            }
        )
    )
    docs = render(overlay)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "routines-migrate-0.2.0-rc.1"
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example.com/routines:0.2.0-rc.1"
    )
    for deployment in deployments(docs).values():
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init["image"] == "registry.example.com/routines:0.2.0-rc.1"


def test_metrics_have_their_own_port_and_only_it_is_open_to_monitoring(
    manifests: list[dict[str, Any]],
) -> None:
    config = next(
        d for d in manifests if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "routines-config"
    )["data"]
    port = int(config["ROUTINES_METRICS_PORT"])
    assert port != int(config["ROUTINES_HTTP_PORT"])
    for deployment in deployments(manifests).values():
        template = deployment["spec"]["template"]
        (container,) = template["spec"]["containers"]
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    policy = next(
        d
        for d in manifests
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "allow-metrics-scrape"
    )
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [port]


def test_production_scales_out_with_autoscalers() -> None:
    docs = render("production")
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    for name, deployment in deployments(docs).items():
        # The autoscaler owns the count: a fixed `replicas` would be reset by every apply.
        assert "replicas" not in deployment["spec"], name
        assert hpas[deployment["metadata"]["name"]]["spec"]["minReplicas"] >= 2
        assert (
            hpas[deployment["metadata"]["name"]]["metadata"]["namespace"]
            == deployment["metadata"]["namespace"]
        )
        assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert set(hpas) == {f"routines-{name}" for name in SERVICES}
    assert sum(d["kind"] == "PodDisruptionBudget" for d in docs) == 4
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "routines-config")
    assert config["data"]["ROUTINES_NATS_STREAM_REPLICAS"] == "3"
    assert config["data"]["ROUTINES_DB_POOLER_MODE"] == "transaction"


def test_keda_overlay_scales_the_dispatcher_on_consumer_lag_instead_of_cpu() -> None:
    docs = render("production-keda")
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert "routines-run-dispatcher" not in hpas
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "routines-run-dispatcher"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["consumer"] == "run-dispatcher"


@pytest.mark.parametrize("overlay", ["dev", "production", "production-keda"])
def test_connection_budget_holds_and_the_check_catches_an_overshoot(overlay: str) -> None:
    from deploy.check import BudgetExceeded, check_budget, connection_demand

    docs = render(overlay)
    total, budget, _ = connection_demand(docs)
    assert 0 < total <= budget
    # A budget one connection short of what the overlay may open → deploy-check fails.
    grown = [dict(d) for d in docs]
    config = next(d for d in grown if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "routines-config")
    config["metadata"] = {
        **config["metadata"],
        "annotations": {"routines/db-connection-budget": str(total - 1)},
    }
    with pytest.raises(SystemExit, match="over its budget"):
        check_budget(overlay, yaml.safe_dump_all(grown))
    del config["metadata"]["annotations"]
    with pytest.raises(BudgetExceeded):
        connection_demand(grown)


def test_alerts_of_the_operations_guide_exist() -> None:
    docs = render("production")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {
        "RoutinesScheduleFireLag",
        "RoutinesRunsStuckReceived",
        "RoutinesDispatcherConsumerLag",
        "RoutinesHttp5xxRatio",
        "RoutinesWebhookAuthFailureSpike",
        "RoutinesNatsDisconnected",
    } <= alerts
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert [e["port"] for e in monitors[0]["spec"]["endpoints"]] == ["metrics"]
    dashboard = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "routines-grafana-dashboard"
    )
    assert "routines_runs_received" in dashboard["data"]["routines.json"]


def test_pooler_server_connections_fit_postgres_in_the_cloudnative_pg_example() -> None:
    """Each PgBouncer pod of the Pooler keeps its own server pools: instances × (per-database cap,
    else roles × default_pool_size) must fit the Cluster's max_connections, less reserved."""
    from deploy.check import DEPLOY, PoolerOvershoot, pooler_server_demand

    docs = [d for d in yaml.safe_load_all((DEPLOY / "examples" / "cloudnative-pg.yaml").read_text()) if d]
    demand, limit, _ = pooler_server_demand(docs)
    assert 0 < demand <= limit
    # Enough Pooler pods more than the example has → over max_connections, the check says so.
    pooler = next(d for d in docs if d["kind"] == "Pooler")
    per_pod = demand // pooler["spec"]["instances"]
    grown = [
        {**d, "spec": {**d["spec"], "instances": d["spec"]["instances"] + limit // per_pod}}
        if d["kind"] == "Pooler"
        else d
        for d in docs
    ]
    with pytest.raises(PoolerOvershoot, match="max_connections"):
        pooler_server_demand(grown)


def test_custom_resources_are_validated_against_their_crd_schemas() -> None:
    """kubernetes-validate knows only built-in kinds (it merely warns on PrometheusRule,
    ServiceMonitor, ScaledObject): deploy-check validates those against the CRDs' schemas."""
    from deploy.check import crd_violations

    docs = render("production") + [d for d in render("production-keda") if d["kind"] == "ScaledObject"]
    assert {d["kind"] for d in docs} >= {"PrometheusRule", "ServiceMonitor", "ScaledObject"}
    assert crd_violations(docs) == []
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    misspelt = {**monitor, "spec": {**monitor["spec"], "endpoint": monitor["spec"]["endpoints"]}}
    (problem,) = crd_violations([misspelt])
    assert "ServiceMonitor" in problem and "'endpoint'" in problem
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    wrong_type = {**scaled, "spec": {**scaled["spec"], "maxReplicaCount": "ten"}}
    (problem,) = crd_violations([wrong_type])
    assert "'ten' is not of type 'integer'" in problem
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert crd_violations([unknown]) == ["Widget w: no schema for example.com/v1 Widget in deploy/schemas"]


def test_dockerfile_syntax_directive_is_honoured() -> None:
    """BuildKit reads parser directives only before any comment, blank line or instruction."""
    dockerfile = OVERLAYS.parents[1] / "Dockerfile"
    first = dockerfile.read_text().splitlines()[0]
    assert first.startswith("# syntax=docker/dockerfile:"), first

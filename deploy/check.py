"""`make deploy-check`: lint, render, schema-validate (custom resources against the CRD schemas in
deploy/schemas) and security-scan the manifests, check the database connection budget of each
overlay and the example Pooler's server connections, and unit-test the alerts with promtool;
offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
OVERLAYS = ("dev", "production", "production-keda")
KUBERNETES_VERSION = "1.34.0"
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable,"
    " braces: {max-spaces-inside: 1}, brackets: {max-spaces-inside: 1}}}"
)
BUDGET_ANNOTATION = "routines/db-connection-budget"
MONITORING = DEPLOY / "k8s" / "components" / "monitoring"


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run(step: str, args: list[str], cwd: Path | None = None) -> str:
    print(f"[deploy-check] {step}", flush=True)
    result = subprocess.run(args, capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        print(result.stdout[-6000:], result.stderr[-6000:], sep="\n")
        raise SystemExit(f"[deploy-check] FAILED: {step}")
    return result.stdout


def render(overlay: str) -> str:
    return run(
        f"kubectl kustomize overlays/{overlay}",
        ["kubectl", "kustomize", str(DEPLOY / "k8s/overlays" / overlay)],
    )


def waivers() -> list[str]:
    lines = (DEPLOY / "checkov-waivers.txt").read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def strict(schema: Any) -> Any:
    """An OpenAPI schema of a CRD that, like the API server's strict field validation, refuses
    fields it does not declare (unless the schema preserves unknown fields)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> strict schema, from the CRDs vendored in deploy/schemas."""
    schemas = {}
    for path in sorted((DEPLOY / "schemas").glob("*.json")):
        crd = json.loads(path.read_text())
        schemas[(crd["apiVersion"], crd["kind"])] = strict(crd["schema"])
    return schemas


def crd_violations(docs: Iterable[dict[str, Any]]) -> list[str]:
    """Problems of the custom resources among `docs` (API groups outside Kubernetes' own),
    validated against their CRD schema; a custom kind without a vendored schema is a problem."""
    # Only deploy-check needs it (kubernetes-validate brings it); no stubs installed.
    import jsonschema  # type: ignore[import-untyped]

    schemas = crd_schemas()
    problems = []
    for doc in docs:
        api_version, kind = doc["apiVersion"], doc["kind"]
        group = api_version.split("/")[0] if "/" in api_version else ""
        if "." not in group or group.endswith("k8s.io"):
            continue  # built in: kubernetes-validate's business
        name = f"{kind} {doc['metadata']['name']}"
        schema = schemas.get((api_version, kind))
        if schema is None:
            problems.append(f"{name}: no schema for {api_version} {kind} in deploy/schemas")
            continue
        for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
            where = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{name}: {where}: {error.message}")
    return problems


def check_crds(overlay: str, rendered: str) -> None:
    print(f"[deploy-check] custom resources against their CRD schemas ({overlay})", flush=True)
    problems = crd_violations(d for d in yaml.safe_load_all(rendered) if d)
    if problems:
        print("\n".join(problems))
        raise SystemExit(f"[deploy-check] FAILED: custom resources of {overlay} do not match their CRDs")


class BudgetExceeded(Exception):
    """The Deployments could open more database connections than the overlay's budget."""


def connection_demand(docs: Iterable[dict[str, Any]]) -> tuple[int, int, list[str]]:
    """(connections the rendered overlay may open at its maximum scale, the budget, the lines of
    the computation). Maximum replicas come from an HPA or a KEDA ScaledObject targeting the
    Deployment, else its `replicas` (default 1); the pool size from the container's
    ROUTINES_DB_POOL_MAX env, else the ConfigMap's; each Job adds one connection."""
    docs = list(docs)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "routines-config")
    budget_text = (config["metadata"].get("annotations") or {}).get(BUDGET_ANNOTATION)
    if budget_text is None:
        raise BudgetExceeded(f"routines-config has no {BUDGET_ANNOTATION} annotation")
    budget = int(budget_text)
    default_pool = int(config["data"].get("ROUTINES_DB_POOL_MAX", "10"))
    maxima: dict[str, int] = {}
    for d in docs:
        if d["kind"] == "HorizontalPodAutoscaler":
            maxima[d["spec"]["scaleTargetRef"]["name"]] = int(d["spec"]["maxReplicas"])
        elif d["kind"] == "ScaledObject":
            maxima[d["spec"]["scaleTargetRef"]["name"]] = int(d["spec"].get("maxReplicaCount", 100))
    total, lines = 0, []
    for d in docs:
        labels = d["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/part-of") != "routines":
            continue
        if d["kind"] == "Deployment":
            name = d["metadata"]["name"]
            replicas = maxima.get(name, int(d["spec"].get("replicas", 1)))
            (container,) = d["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            pool = int(env.get("ROUTINES_DB_POOL_MAX") or default_pool)
            total += replicas * pool
            lines.append(f"{name}: {replicas} replicas x pool {pool} = {replicas * pool}")
        elif d["kind"] == "Job":
            total += 1
            lines.append(f"{d['metadata']['name']}: 1")
    return total, budget, lines


def check_budget(overlay: str, rendered: str) -> None:
    print(f"[deploy-check] connection budget ({overlay})", flush=True)
    total, budget, lines = connection_demand(d for d in yaml.safe_load_all(rendered) if d)
    if total > budget:
        print("\n".join(lines))
        raise SystemExit(
            f"[deploy-check] FAILED: {overlay} may open {total} database connections, over its budget of "
            f"{budget} ({BUDGET_ANNOTATION}); lower HPA maxima or ROUTINES_DB_POOL_MAX, or raise the budget"
        )
    print(f"[deploy-check]   {total} <= {budget}", flush=True)


class PoolerOvershoot(Exception):
    """The Pooler's PgBouncer pods could open more server connections than Postgres allows."""


# PostgreSQL and PgBouncer defaults, used when the example leaves a parameter unset.
PG_MAX_CONNECTIONS = 100
PG_SUPERUSER_RESERVED = 3
PGBOUNCER_DEFAULT_POOL_SIZE = 20


def pooler_server_demand(docs: Iterable[dict[str, Any]]) -> tuple[int, int, list[str]]:
    """(server connections the CloudNativePG Poolers may open, what the Cluster allows them, the
    lines of the computation); raises PoolerOvershoot when the first exceeds the second. Each
    PgBouncer pod keeps its own pools: per pod, the service roles x (default_pool_size +
    reserve_pool_size), capped by max_db_connections when set. The Cluster allows max_connections
    less superuser_reserved_connections and the migration Job's one direct connection."""
    docs = list(docs)
    demand, limit, lines = 0, 0, []
    for cluster in (d for d in docs if d["kind"] == "Cluster"):
        name = cluster["metadata"]["name"]
        params = (cluster["spec"].get("postgresql") or {}).get("parameters") or {}
        max_connections = int(params.get("max_connections", PG_MAX_CONNECTIONS))
        reserved = int(params.get("superuser_reserved_connections", PG_SUPERUSER_RESERVED))
        allowed = max_connections - reserved - 1
        roles = len((cluster["spec"].get("managed") or {}).get("roles") or []) or 1
        used = 0
        for pooler in (d for d in docs if d["kind"] == "Pooler" and d["spec"]["cluster"]["name"] == name):
            bouncer = pooler["spec"]["pgbouncer"].get("parameters") or {}
            pools = int(bouncer.get("default_pool_size", PGBOUNCER_DEFAULT_POOL_SIZE)) + int(
                bouncer.get("reserve_pool_size", 0)
            )
            per_pod = roles * pools
            cap = int(bouncer.get("max_db_connections", 0))
            if cap:
                per_pod = min(per_pod, cap)
            pods = int(pooler["spec"].get("instances", 1))
            used += pods * per_pod
            lines.append(f"{pooler['metadata']['name']}: {pods} pods x {per_pod} server connections")
        lines.append(
            f"{name}: max_connections {max_connections} - reserved {reserved} - migration Job 1 = {allowed}"
        )
        if used > allowed:
            raise PoolerOvershoot(
                f"Poolers of {name} may open {used} server connections, over max_connections allows"
                f" ({allowed}): " + "; ".join(lines)
            )
        demand, limit = demand + used, limit + allowed
    return demand, limit, lines


def check_pooler_example() -> None:
    print("[deploy-check] pooler server connections (examples/cloudnative-pg.yaml)", flush=True)
    path = DEPLOY / "examples" / "cloudnative-pg.yaml"
    try:
        demand, limit, _ = pooler_server_demand(d for d in yaml.safe_load_all(path.read_text()) if d)
    except PoolerOvershoot as exc:
        raise SystemExit(f"[deploy-check] FAILED: {exc}") from None
    print(f"[deploy-check]   {demand} <= {limit}", flush=True)


def ensure_promtool() -> str:
    """promtool from Debian's `prometheus` package, installed when missing (CI is a fresh machine)."""
    found = shutil.which("promtool")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    print("[deploy-check] installing promtool (apt-get install prometheus)", flush=True)
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        run("apt-get install prometheus", install)
    found = shutil.which("promtool")
    if not found:
        raise SystemExit("[deploy-check] FAILED: promtool not found after installing prometheus")
    return found


def check_alerts(tmp: Path) -> None:
    promtool = ensure_promtool()
    rule = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(MONITORING / "alerts.test.yaml", tmp / "alerts.test.yaml")
    run("promtool check rules (PrometheusRule routines)", [promtool, "check", "rules", "rules.yaml"], cwd=tmp)
    run("promtool test rules (alerts.test.yaml)", [promtool, "test", "rules", "alerts.test.yaml"], cwd=tmp)


def main() -> int:
    run(
        "yamllint (k8s, examples)",
        [tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, str(DEPLOY / "k8s"), str(DEPLOY / "examples")],
    )
    with tempfile.TemporaryDirectory() as tmp:
        for overlay in OVERLAYS:
            text = render(overlay)
            rendered = Path(tmp) / f"{overlay}.yaml"
            rendered.write_text(text)
            run(
                f"kubernetes-validate --strict ({overlay}, Kubernetes {KUBERNETES_VERSION})",
                [tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(rendered)],
            )
            check_crds(overlay, text)
            check_budget(overlay, text)
            run(
                f"checkov ({overlay}; waived: {', '.join(waivers())})",
                [
                    tool("checkov"),
                    "-f",
                    str(rendered),
                    "--framework",
                    "kubernetes",
                    "--quiet",
                    "--compact",
                    "--skip-download",
                    "--skip-check",
                    ",".join(waivers()),
                ],
            )
        check_pooler_example()
        check_alerts(Path(tmp))
    print("[deploy-check] all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

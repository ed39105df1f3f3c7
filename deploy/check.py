"""`make deploy-check`: lint, render, schema-validate and security-scan the manifests, offline."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.34.0"
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable,"
    " braces: {max-spaces-inside: 1}, brackets: {max-spaces-inside: 1}}}"
)


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run(step: str, args: list[str]) -> str:
    print(f"[deploy-check] {step}", flush=True)
    result = subprocess.run(args, capture_output=True, text=True, check=False)
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


def main() -> int:
    run("yamllint", [tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, str(DEPLOY / "k8s")])
    with tempfile.TemporaryDirectory() as tmp:
        for overlay in OVERLAYS:
            rendered = Path(tmp) / f"{overlay}.yaml"
            rendered.write_text(render(overlay))
            run(
                f"kubernetes-validate --strict ({overlay}, Kubernetes {KUBERNETES_VERSION})",
                [tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(rendered)],
            )
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
    print("[deploy-check] all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

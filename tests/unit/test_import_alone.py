"""Every module imports on its own, in a fresh interpreter, with warnings as errors: no import
cycle hides behind the order in which an app happens to import things."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    ROOT: ["shared"],
    ROOT / "services/api": ["routines_api"],
    ROOT / "services/scheduler": ["routines_scheduler"],
    ROOT / "services/webhook-gateway": ["routines_gateway"],
    ROOT / "services/run-dispatcher": ["routines_dispatcher"],
    ROOT / "clients/python": ["routines_client"],
}


def modules() -> list[str]:
    names = []
    for base, packages in SOURCES.items():
        for package in packages:
            for path in sorted((base / package).rglob("*.py")):
                parts = path.relative_to(base).with_suffix("").parts
                names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import_alone(module: str) -> tuple[str, int, str]:
    path = [str(base) for base in SOURCES]
    code = f"import sys; sys.path[:0] = {path!r}; import {module}"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    return module, result.returncode, result.stderr.strip().splitlines()[-1:][0] if result.stderr else ""


def test_every_module_imports_alone_with_warnings_as_errors() -> None:
    names = modules()
    assert len(names) > 50
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_import_alone, names))
    failures = {module: error for module, code, error in results if code != 0}
    assert not failures, failures

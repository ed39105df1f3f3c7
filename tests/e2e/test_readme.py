"""The README's quick-start block, run word for word against a freshly started `routines dev`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_dev_stack import start_dev_stack

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_block() -> str:
    """The shell block the README asks a newcomer to paste once `make run` says ready."""
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    pasted = [b for b in blocks if ". .dev/stack.env" in b]
    assert len(pasted) == 1, "the quick start must have exactly one block that sources .dev/stack.env"
    return pasted[0]


def test_readme_quick_start_runs_to_issue_created(tmp_path: Path) -> None:
    # The dispatcher may take longer than the default 2 s wait on a loaded CI machine.
    stack = start_dev_stack(tmp_path, ".dev", ROUTINES_MANUAL_RUN_WAIT_SEC="20")
    try:
        result = subprocess.run(
            ["bash", "-c", quick_start_block()],
            cwd=tmp_path,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            timeout=120,
        )
        out, err = result.stdout.decode(), result.stderr.decode()
        lines = out.strip().splitlines()
        assert err == "", err
        uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        for i, what in enumerate(("company", "agent", "project", "routine")):
            assert re.fullmatch(f"{what} {uuid}", lines[i]), out
        assert re.fullmatch(
            r"next fire \d{4}-\d\d-\d\dT09:00:00\+0[12]:00|next fire \d{4}-.*Z", lines[4]
        ) or (lines[4].startswith("next fire ") and "null" not in lines[4]), out
        assert lines[-1] == "issue_created", out
    finally:
        stack.stop()

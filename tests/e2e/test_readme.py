"""The README's quick-start block, run word for word against a freshly started `routines dev`."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_dev_stack import start_dev_stack
from tests.production.servers import ensure_debian_package

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


@pytest.fixture(scope="module")
def readme_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One fresh `routines dev` for the block in every shell; its directory is the working one."""
    workdir = tmp_path_factory.mktemp("readme")
    # The dispatcher may take longer than the default 2 s wait on a loaded CI machine.
    stack = start_dev_stack(workdir, ".dev", ROUTINES_MANUAL_RUN_WAIT_SEC="20")
    try:
        yield workdir
    finally:
        stack.stop()


def shell_binary(shell: str) -> str:
    """The README says "bash or zsh": zsh is installed (Debian's package) when it is missing."""
    found = shutil.which(shell)
    return found if found is not None else ensure_debian_package(shell, shell)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_readme_quick_start_runs_to_issue_created(readme_stack: Path, shell: str) -> None:
    result = subprocess.run(
        [shell_binary(shell), "-c", quick_start_block()],
        cwd=readme_stack,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(readme_stack)},
        capture_output=True,
        timeout=120,
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    lines = out.strip().splitlines()
    assert err == "", err
    assert result.returncode == 0, out
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    for i, what in enumerate(("company", "agent", "project", "routine")):
        assert re.fullmatch(f"{what} {uuid}", lines[i]), out
    assert re.fullmatch(r"next fire \d{4}-\d\d-\d\dT09:00:00\+0[12]:00|next fire \d{4}-.*Z", lines[4]) or (
        lines[4].startswith("next fire ") and "null" not in lines[4]
    ), out
    assert lines[-1] == "issue_created", out
    assert len(lines) == 6, out


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_readme_quick_start_fails_loudly_without_a_stack(tmp_path: Path, shell: str) -> None:
    """Without `.dev/stack.env` (stack not up) no step may print an empty id as if it worked."""
    result = subprocess.run(
        [shell_binary(shell), "-c", quick_start_block()],
        cwd=tmp_path,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        timeout=60,
    )
    assert result.stdout.decode() == "", result.stdout.decode()
    assert "stack.env" in result.stderr.decode()

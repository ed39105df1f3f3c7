"""Named queries: one name, one query, within a package's files."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.db import load_queries


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "queries_pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.sql").write_text("-- one --\n-- what it does\nSELECT 1;\n\n-- two --\nSELECT 2\n")
    (root / "b.sql").write_text("-- three --\nSELECT 3;\n")
    (root / "clash.sql").write_text("-- two --\nSELECT 'again'\n")
    sys.path.insert(0, str(tmp_path))
    yield root
    sys.path.remove(str(tmp_path))
    sys.modules.pop("queries_pkg", None)


def test_queries_of_several_files_load_by_name(package: Path) -> None:
    assert load_queries("queries_pkg", "a.sql", "b.sql") == {
        "one": "SELECT 1",
        "two": "SELECT 2",
        "three": "SELECT 3",
    }


def test_a_name_defined_twice_is_refused(package: Path) -> None:
    with pytest.raises(ValueError, match="'two' defined twice in queries_pkg"):
        load_queries("queries_pkg", "a.sql", "clash.sql")


def test_a_file_without_queries_is_refused(package: Path) -> None:
    (package / "empty.sql").write_text("SELECT 1;\n")
    with pytest.raises(ValueError, match=r"no queries found in queries_pkg/empty\.sql"):
        load_queries("queries_pkg", "empty.sql")

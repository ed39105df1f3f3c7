"""docs/operations.md's configuration table is the full list of settings (the README sends
operators there): every field of every settings class in shared/settings.py has a row, and every
row names a real setting."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from pydantic_settings import BaseSettings

import shared.settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_variables() -> set[str]:
    """The names in the first column of the table under `## Configuration`, without `ROUTINES_`."""
    text = OPERATIONS.read_text()
    section = text[text.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| variable") or line.startswith("|---"):
            continue
        first = line.split("|")[1]
        names.update(name for name in re.split(r"[\s/,`]+", first) if name)
    return {name.removeprefix("ROUTINES_") for name in names}


def settings_fields() -> set[str]:
    classes = [
        cls
        for _, cls in inspect.getmembers(shared.settings, inspect.isclass)
        if issubclass(cls, BaseSettings) and cls.__module__ == shared.settings.__name__
    ]
    assert len(classes) >= 5, classes  # common, secret key, api, gateway, scheduler, dispatcher
    return {name.upper() for cls in classes for name in cls.model_fields}


def test_every_setting_has_a_row_in_the_operations_configuration_table() -> None:
    missing = settings_fields() - documented_variables()
    assert not missing, f"docs/operations.md#configuration lacks {sorted(missing)}"


def test_every_row_of_the_configuration_table_is_a_setting() -> None:
    read_outside_the_classes = {shared.settings.SECRETS_DIR_ENV.removeprefix("ROUTINES_")}
    unknown = documented_variables() - settings_fields() - read_outside_the_classes
    assert not unknown, f"docs/operations.md#configuration names unknown settings {sorted(unknown)}"

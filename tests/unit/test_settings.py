"""Settings that contradict each other are refused at start, naming both variables."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import DispatcherSettings, load_settings

DSN = "postgresql://postgres@127.0.0.1:5432/routines"


def test_dispatcher_batches_at_once_must_fit_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTINES_DATABASE_URL", DSN)
    monkeypatch.setenv("ROUTINES_DB_POOL_MAX", "4")
    monkeypatch.setenv("ROUTINES_DECIDE_CONCURRENCY", "4")
    with pytest.raises(ConfigurationError) as refused:
        load_settings(DispatcherSettings)
    message = str(refused.value)
    assert "ROUTINES_DECIDE_CONCURRENCY (4) must be below ROUTINES_DB_POOL_MAX (4)" in message
    monkeypatch.setenv("ROUTINES_DECIDE_CONCURRENCY", "3")
    assert load_settings(DispatcherSettings).decide_concurrency == 3

"""Settings that contradict each other are refused at start, naming both variables."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import DispatcherSettings, SchedulerSettings, load_settings

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


@pytest.mark.parametrize(
    ("variable", "value", "refusal"),
    [
        (
            "ROUTINES_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
            "3000",
            "ROUTINES_PREPARE_AHEAD_SEC (2.0) must be at most half of "
            "ROUTINES_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS (3000)",
        ),
        (
            "ROUTINES_DB_LOCK_TIMEOUT_MS",
            "1500",
            "ROUTINES_PREPARE_AHEAD_SEC (2.0) must be at most ROUTINES_DB_LOCK_TIMEOUT_MS (1500)",
        ),
    ],
)
def test_a_prepared_slot_must_outlive_no_timeout(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, refusal: str
) -> None:
    """A slot prepared ahead waits for the slot inside its transaction (idle) while holding its
    triggers (an edit waits): neither timeout may end that wait."""
    monkeypatch.setenv("ROUTINES_DATABASE_URL", DSN)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings(SchedulerSettings)
    assert refusal in str(refused.value)
    monkeypatch.setenv("ROUTINES_PREPARE_AHEAD_SEC", "0.5")
    assert load_settings(SchedulerSettings).prepare_ahead_sec == 0.5

"""The gateway's 202 body, built from bytes made once per webhook: exactly json.dumps's answer."""

from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from routines_gateway.cache import TriggerState
from shared.ids import new_id


def _state(trigger_id: uuid.UUID, routine_id: uuid.UUID) -> TriggerState:
    return TriggerState(trigger_id, routine_id, uuid.uuid4(), True, "active", "bearer", 300, ("s",), 0.0)


@given(st.uuids(), st.uuids(), st.uuids())
def test_the_accepted_body_is_json_dumps_of_the_answer(
    trigger_id: uuid.UUID, routine_id: uuid.UUID, run_id: uuid.UUID
) -> None:
    state = _state(trigger_id, routine_id)
    expected = {
        "runId": str(run_id),
        "status": "received",
        "routineId": str(routine_id),
        "triggerId": str(trigger_id),
        "duplicate": False,
    }
    assert state.accepted_body(str(run_id)) == json.dumps(expected).encode()


def test_the_accepted_body_names_the_run_it_is_given() -> None:
    state = _state(uuid.uuid4(), uuid.uuid4())
    first, second = str(new_id()), str(new_id())
    assert json.loads(state.accepted_body(first))["runId"] == first
    assert json.loads(state.accepted_body(second))["runId"] == second
    assert state.key == str(state.trigger_id)

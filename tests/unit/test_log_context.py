"""Log context is scoped: a message's request id is on the lines logged while it is handled, and
gone afterwards, so a long-lived consumer never stamps later work with a stale id."""

from __future__ import annotations

from typing import Any

import structlog
from nats.aio.msg import Msg
from structlog.testing import capture_logs

from shared.bus import REQUEST_ID_HEADER, message_context
from shared.logging import add_request_id, request_id_bound


def _msg(request_id: str | None) -> Msg:
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return Msg(_client=None, subject="routines.runs.requested", headers=headers)  # type: ignore[arg-type]


def test_each_message_binds_its_own_request_id_only_while_it_is_handled() -> None:
    log: Any = structlog.get_logger()
    with capture_logs(processors=[add_request_id]) as lines:
        with message_context(_msg("first")):
            log.info("deciding")
        log.info("between batches")
        with message_context(_msg("second")):
            log.info("deciding")
        with message_context(_msg(None)):
            log.info("no id")
    assert [(line["event"], line.get("request_id")) for line in lines] == [
        ("deciding", "first"),
        ("between batches", None),
        ("deciding", "second"),
        ("no id", None),
    ]


def test_an_outer_request_id_is_restored_after_a_message() -> None:
    log: Any = structlog.get_logger()
    with (
        capture_logs(processors=[add_request_id]) as lines,
        request_id_bound("outer"),
    ):
        with message_context(_msg("inner")):
            log.info("inside")
        log.info("after")
    assert [line.get("request_id") for line in lines] == ["inner", "outer"]

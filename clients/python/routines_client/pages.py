"""Pages of cursor-paginated listings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

NEXT_CURSOR_HEADER = "X-Next-Cursor"


class Page(list[T]):
    """One page of a listing: the items, and the cursor of the next page (None on the last)."""

    def __init__(self, items: Iterable[T] = (), next_cursor: str | None = None) -> None:
        super().__init__(items)
        self.next_cursor = next_cursor

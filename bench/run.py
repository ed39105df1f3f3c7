"""`make bench`: every benchmark in turn, each printing its figures and ratio."""

from __future__ import annotations

import asyncio

from bench import scheduler_scale


def main() -> None:
    asyncio.run(scheduler_scale.main())


if __name__ == "__main__":
    main()

"""IANA time zones from the pinned `tzdata` package: the same names and rules on every host.

Accepted: the canonical zones and their links as tzdata lists them (`Europe/Amsterdam`, `UTC`,
`US/Eastern`). Rejected: names whose meaning depends on the host or that name no place
(`localtime`, `posixrules`, `Factory`, `posix/…`, `right/…`), and anything else not in the list; an
unknown name gets up to three close suggestions.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

from shared.errors import InvalidTimezone

# In tzdata's list but not a place: "Factory" is a placeholder zone whose abbreviation is "-00".
_NOT_PLACES = frozenset({"Factory"})
_HOST_FILES = frozenset({"localtime", "posixrules", "Factory"})
_HOST_TREES = frozenset({"posix", "right"})
_EXAMPLE = "Europe/Amsterdam"


@lru_cache(maxsize=1)
def known_timezones() -> frozenset[str]:
    """Every accepted name: tzdata's zones and links."""
    listing = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in listing.splitlines() if line.strip()) - _NOT_PLACES


@lru_cache(maxsize=1)
def _by_folded_name() -> dict[str, str]:
    return {name.casefold(): name for name in known_timezones()}


@lru_cache(maxsize=256)
def suggest_timezones(name: str, limit: int = 3) -> list[str]:
    """Up to `limit` known names close to `name` (case, typos, a city without its region)."""
    folded = name.strip().casefold()
    names = _by_folded_name()
    found: list[str] = []
    if folded in names:
        found.append(names[folded])
    city = folded.rsplit("/", 1)[-1]
    found += sorted(v for k, v in names.items() if k.rsplit("/", 1)[-1] == city and v not in found)
    # get_close_matches prunes with cheap upper bounds first (a full ratio for all ~600 names
    # would cost the event loop tens of milliseconds); score only the few it keeps.
    region = folded.split("/", 1)[0] + "/"
    in_region = [k for k in names if k.startswith(region)] if "/" in folded else []
    close = difflib.get_close_matches(folded, in_region or list(names), n=limit * 2, cutoff=0.6)
    scored = [(difflib.SequenceMatcher(None, folded, k).ratio(), k) for k in close]
    best = scored[0][0] if scored else 0.0
    # Only the near-best: one obvious typo fix is more useful than three loose look-alikes.
    found += [names[k] for ratio, k in scored[:limit] if ratio >= max(0.6, best - 0.1)]
    return list(dict.fromkeys(found))[:limit]


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """An IANA zone with tzdata's rules, or InvalidTimezone saying what would be accepted."""
    if name in known_timezones():
        with resources.files("tzdata.zoneinfo").joinpath(name).open("rb") as data:
            return ZoneInfo.from_file(data, key=name)
    if _host_dependent(name):
        raise InvalidTimezone(
            f"time zone {name!r} depends on the host; use an IANA name such as {_EXAMPLE}",
            {"timezone": name},
        )
    suggestions = suggest_timezones(name) if len(name) <= 64 else []
    hint = (
        f"; did you mean {_either(suggestions)}?" if suggestions else f"; use an IANA name such as {_EXAMPLE}"
    )
    raise InvalidTimezone(f"unknown time zone {name!r}{hint}", {"timezone": name, "suggestions": suggestions})


def _host_dependent(name: str) -> bool:
    """A file path, the host's own zone files, or tzdata's alternative trees."""
    parts = name.split("/")
    return name.startswith("/") or parts[0] in _HOST_TREES or bool(_HOST_FILES & set(parts))


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]

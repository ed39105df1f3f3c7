"""The typed keys under which every service's app holds its platform pieces. Their own module, below
`shared.http`, `shared.metrics` and `shared.lifecycle`, so those can share them without importing
each other (`SUPERVISOR_KEY` lives beside `Supervisor` in `shared.lifecycle`)."""

from __future__ import annotations

from aiohttp import web

from shared.bus import Bus
from shared.db import Database
from shared.settings import CommonSettings

SETTINGS_KEY = web.AppKey("settings", CommonSettings)
DB_KEY = web.AppKey("db", Database)
BUS_KEY = web.AppKey("bus", Bus)

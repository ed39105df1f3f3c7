"""The API's application state, under typed keys (one place, so handler modules need not import
each other for it)."""

from __future__ import annotations

from aiohttp import web

from routines_api.waiter import DecisionWaiter
from shared.crypto import SecretBox
from shared.settings import ApiSettings

API_SETTINGS_KEY = web.AppKey("api_settings", ApiSettings)
SECRET_BOX_KEY = web.AppKey("secret_box", SecretBox)
WAITER_KEY = web.AppKey("decision_waiter", DecisionWaiter)

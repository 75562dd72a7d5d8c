"""`GET /account-info/v3/details`: which portal (hub id) a token belongs to.

Every token the simulator accepts belongs to its one portal, as the tokens of one HubSpot
account's private apps do.
"""

from __future__ import annotations

from aiohttp import web

from .responses import json_response
from .state import state_of


async def account_details(request: web.Request) -> web.Response:
    return json_response(
        {
            "portalId": state_of(request).config.portal_id,
            "accountType": "STANDARD",
            "timeZone": "US/Eastern",
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": "-05:00",
            "utcOffsetMilliseconds": -18_000_000,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        }
    )

"""The HubSpot token test clients send, and the header that carries it."""

from __future__ import annotations

TOKEN = "test-token-not-real"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

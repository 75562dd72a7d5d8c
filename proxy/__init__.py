"""hubspot-proxy: a rate-limiting reverse proxy for the HubSpot API."""

from __future__ import annotations

__version__ = "0.1.0"

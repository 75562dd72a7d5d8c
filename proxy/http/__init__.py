"""The gateway's HTTP edge: request context, credentials, HubSpot-shaped responses, admin guard.
May import: proxy.errors, proxy.hubspot, proxy.config, proxy.metrics.
"""

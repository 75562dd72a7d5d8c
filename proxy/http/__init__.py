"""The gateway's HTTP edge: the server below the app (unparseable requests, slow clients, the
connection cap), reading a request (headers, bounded body decoding), request context,
credentials, HubSpot-shaped responses, admin guard.
May import: proxy.errors, proxy.hubspot, proxy.config, proxy.metrics.
"""

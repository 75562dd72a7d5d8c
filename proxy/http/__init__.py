"""The gateway's HTTP edge: the server below the app (unparseable requests, slow clients, the
connection cap), reading a request (headers, bounded body decoding), the one request object,
credentials, HubSpot-shaped responses, the error middleware, the admin guard.
May import: budget, rules, hubspot, errors, config, metrics.
"""

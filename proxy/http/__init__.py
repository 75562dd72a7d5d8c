"""The gateway's HTTP edge: the one request object, credentials, HubSpot-shaped responses, the
error middleware, the admin guard. May import: budget, rules, hubspot, errors, config, metrics.
"""

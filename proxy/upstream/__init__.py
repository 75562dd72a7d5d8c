"""The way out to HubSpot: pooled transport, the admitted caller, forwarding, rate-limit headers.
May import: budget, store, hubspot, http and the top modules (errors, metrics, config).
"""

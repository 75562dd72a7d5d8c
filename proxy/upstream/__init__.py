"""The way out to HubSpot: pooled transport, the admitted caller (one seam: a decoded answer or a
stream), forwarding, the background client, rate-limit headers.
May import: budget, http, store, hubspot and the top modules (errors, metrics, config).
"""

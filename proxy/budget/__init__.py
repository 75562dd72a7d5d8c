"""The budget: admission model, plans, the Redis limiter and the in-process fallback.
May import: proxy.hubspot, proxy.rules, proxy.store, proxy.errors, proxy.metrics, proxy.config.
"""

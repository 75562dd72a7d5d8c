"""Answers from Redis: search indexes, counters, the object cache.
May import: proxy.store, proxy.rules, proxy.budget, proxy.hubspot, proxy.errors, proxy.metrics.
"""

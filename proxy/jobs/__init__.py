"""Periodic jobs under Redis leases: counter sync and reconcile.
May import: runtime, reads, upstream, budget, store, rules, http, hubspot and the top modules.
"""

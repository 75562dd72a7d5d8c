"""Redis: key layout, Lua scripts, Redis errors, the rules' store, vault, embedded Valkey.
May import: proxy.errors, proxy.metrics, proxy.config.
"""

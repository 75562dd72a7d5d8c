"""Redis: key layout (one prefix, `keys`), Lua scripts registered in one place (`scripts`), what
Redis trouble is and the one breaker (`health`), the rules' store, vault, embedded Valkey.
May import: proxy.errors, proxy.metrics, proxy.config.
"""

"""Redis: the clients (the request path's and the background's), for one server or a cluster
(`client`), key layout (one prefix, `keys`), Lua scripts registered in one place (`scripts`),
what Redis trouble is and the one breaker (`health`), writes waited on by replicas
(`replicated`), the rules' store, vault, embedded Valkey.
May import: proxy.errors, proxy.metrics, proxy.config.
"""

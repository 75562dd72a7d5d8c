"""Write-behind: the durable stream, batching worker, result mapping, dead letters, status.
May import: proxy.upstream, proxy.budget, proxy.store, proxy.hubspot, proxy.errors, proxy.metrics.
"""

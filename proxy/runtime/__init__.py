"""The top of the request path: the catch-all handler (edge), dispatch of one request to its action
(respond, write-behind, read, forward), rule learning, probes. May import everything below it:
upstream, reads, writes, budget, store, rules, hubspot, http and the top modules.
"""

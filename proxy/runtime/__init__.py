"""Dispatch of one classified request: respond, read, write-behind or forward; learning.
May import: upstream, reads, writes, budget, store, rules, hubspot, http and the top modules.
"""

"""Rules: the YAML model, schema and reader with file:line, path matching, classification, holder.
Pure apart from the holder's file watch. May import: proxy.hubspot, proxy.metrics.
"""

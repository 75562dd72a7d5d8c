"""HubSpot protocol knowledge: paths, buckets, shapes and value conversions. Pure.
May import: nothing from proxy but proxy.errors.
"""

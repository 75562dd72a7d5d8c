"""The importable test kit: constants, clients and helpers that tests and bench/ share.

Fixtures live in conftest.py files, never here; nothing here imports from test modules.
"""

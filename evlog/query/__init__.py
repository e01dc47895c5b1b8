"""Selecting records: filters (types, keys, the --where language) and following the log as it grows.
Imports the store.
"""

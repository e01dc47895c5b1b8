"""Delivering events to handler commands: the runner, the consumer behind replay and hooks, the dead-
letter file, checkpoints, the hook registry and their administration. Imports query, ingest and the
store.
"""

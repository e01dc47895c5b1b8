"""The log over WebSocket: the server (routes, the hub that follows the log once for all clients,
tokens) and the subscribe client. Imports query, ingest and the store.
"""

"""Credentials: keeping tokens out of logs and messages.

Both `serve` (access logs) and `subscribe` (its errors and warnings) show
request paths and URLs that may carry `?token=SECRET`; `redact` replaces the
value. This module imports nothing heavy, so `subscribe` can use it without
loading the server.
"""

from __future__ import annotations

import urllib.parse

REDACTED = "[redacted]"


def redact(path: str) -> str:
    """A request path or URL safe to show: every `token` parameter's value (however its name is spelt, as in
    `tok%65n`) and a password in the URL's user part replaced."""
    base, sep, query = path.partition("?")
    scheme, slashes, rest = base.partition("://")
    if slashes:
        authority, slash, tail = rest.partition("/")
        user, at, host = authority.rpartition("@")
        if at and ":" in user:
            authority = user.split(":", 1)[0] + ":" + REDACTED + "@" + host
        base = scheme + slashes + authority + slash + tail
    if not sep:
        return base
    query, hash_, fragment = query.partition("#")
    parts = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        if eq and urllib.parse.unquote_plus(name).strip().lower() == "token":
            pair = f"{name}{eq}{REDACTED}"
        parts.append(pair)
    return base + "?" + "&".join(parts) + hash_ + fragment

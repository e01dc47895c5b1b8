"""Credentials: the rules for tokens, reading the stored one safely, keeping them out of messages.

- A token has at least MIN_TOKEN_LENGTH characters, wherever it comes from
  (`--token`, `EVLOG_TOKEN`, each line of `--token-file`, `DIR/.serve-token`);
  `serve` warns about one shorter than GOOD_TOKEN_LENGTH. (A generated token
  has 43.)
- `DIR/.serve-token` is read only when it is a regular file (never through a
  symbolic link: it is opened with O_NOFOLLOW), owned by this user, and
  closed to group and others (mode 0600 or stricter): anyone who could plant
  or read it could choose or learn the token. `serve` and `subscribe` both
  read it.
- Both `serve` (access logs) and `subscribe` (its errors and warnings) show
  request paths and URLs that may carry `?token=SECRET`; `redact` replaces
  the value.

This module imports nothing heavy, so `subscribe` uses it without loading the
server.
"""

from __future__ import annotations

import errno
import os
import stat
import urllib.parse
from pathlib import Path

from evlog.errors import EvlogError, UsageError

REDACTED = "[redacted]"
MIN_TOKEN_LENGTH = 7
GOOD_TOKEN_LENGTH = 16
_GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_token(token: str, source: str) -> str:
    """`token` when it is long enough; a UsageError naming `source` (never the token) otherwise."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise UsageError(f"{source}: a token must be at least {MIN_TOKEN_LENGTH} characters "
                         f"(this one has {len(token)}); make one with {_GENERATE}")
    return token


def weak_token_warning(token: str, source: str) -> str | None:
    """A warning for a token that is allowed but short enough to be guessed; None for a good one."""
    if len(token) < GOOD_TOKEN_LENGTH:
        return (f"{source}: a token of {len(token)} characters is easy to guess; use {GOOD_TOKEN_LENGTH} or "
                f"more ({_GENERATE})")
    return None


def private_file_problem(path: Path, st: os.stat_result) -> str | None:
    """Why a file holding a token must not be trusted, or None."""
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid != os.geteuid():
        return f"{path} belongs to another user: remove it, or chown it to yourself"
    if st.st_mode & 0o077:
        return (f"{path} is open to group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"run `chmod 600 {path}`")
    return None


def read_stored_token(path: Path) -> str | None:
    """The token in DIR/.serve-token; None when there is no such file; EvlogError when it is a symbolic link,
    not a private regular file, empty or too short."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise EvlogError(f"{path} is a symbolic link: a token is never read through one "
                             "(remove it to have a new token generated)") from None
        raise EvlogError(f"cannot read {path}: {e.strerror}") from None
    try:
        problem = private_file_problem(path, os.fstat(fd))
        if problem is not None:
            raise EvlogError(problem)
        data = os.read(fd, 4096)  # a token is a line; a regular file gives what it holds
    finally:
        os.close(fd)
    text = data.decode("utf-8", "replace").strip()
    if not text:
        raise EvlogError(f"{path} is empty: remove it to have a new token generated")
    if len(text) < MIN_TOKEN_LENGTH or "\n" in text:
        raise EvlogError(f"{path} does not hold one token of at least {MIN_TOKEN_LENGTH} characters: "
                         "remove it to have a new token generated")
    return text


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

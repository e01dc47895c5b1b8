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
import hmac
import os
import secrets
import stat
import urllib.parse
from pathlib import Path

from evlog.errors import EvlogError, UsageError
from evlog.report import Report, quiet

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


class Tokens:
    """Accepted tokens: given, from a file re-read when it changes, or generated into DIR/.serve-token.

    Every token has at least MIN_TOKEN_LENGTH characters: a shorter --token or EVLOG_TOKEN is a usage
    error, a shorter line of --token-file an error at start-up and, when the file is rewritten later, a
    line that is skipped with a warning (the other lines take effect, so revoking still works). A token
    shorter than GOOD_TOKEN_LENGTH is accepted with a warning.
    """

    def __init__(self, log_dir: Path | None, token: str | None, token_file: Path | None,
                 report: Report = quiet) -> None:
        self.file, self.report = token_file, report
        self.file_sig: tuple[int, int, int] | None = None
        self.tokens: list[bytes] = []
        self.where = ""
        if token_file is not None:
            self._reload()
            if not self.tokens:
                raise EvlogError(f"--token-file {token_file}: holds no token")
            self.where = f"tokens from {token_file} (re-read when it changes)"
        elif token:
            from_env = token == os.environ.get("EVLOG_TOKEN")
            source = "EVLOG_TOKEN" if from_env else "--token"
            self.tokens = [check_token(token, source).encode()]
            weak = weak_token_warning(token, source)
            if weak:
                self.report("warning", weak)
            self.where = "EVLOG_TOKEN" if from_env else "the given token"
        elif log_dir is None:
            raise UsageError("a NATS log has no directory to keep a generated token in: give --token, "
                             "--token-file or EVLOG_TOKEN")
        else:
            path = log_dir / ".serve-token"
            self.tokens = [_stored_token(path).encode()]
            self.where = f"a token stored in {path} (mode 0600)"

    def _reload(self) -> None:
        assert self.file is not None
        first = self.file_sig is None
        try:
            st = os.stat(self.file)
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            if sig == self.file_sig:
                return
            text = self.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            if first:
                why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
                raise EvlogError(f"--token-file {self.file}: {why}") from None
            return  # keep the tokens we had while the file is being replaced
        tokens = []
        for n, line in enumerate(text.splitlines(), 1):
            candidate = line.strip()
            if not candidate:
                continue
            if len(candidate) < MIN_TOKEN_LENGTH:
                problem = f"--token-file {self.file}: line {n}: a token must be at least {MIN_TOKEN_LENGTH} characters"
                if first:
                    raise EvlogError(problem)
                self.report("warning", problem + "; that line is ignored")
                continue
            weak = weak_token_warning(candidate, f"--token-file {self.file}: line {n}") if first else None
            if weak:
                self.report("warning", weak)
            tokens.append(candidate.encode())
        if first and st.st_mode & 0o077:
            self.report("warning", f"--token-file {self.file} is open to group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o}): consider `chmod 600 {self.file}`")
        self.tokens = tokens
        self.file_sig = sig

    def accepts(self, candidate: str | None) -> bool:
        if self.file is not None:
            self._reload()
        if not candidate:
            return False
        given = candidate.encode()
        ok = False
        for t in self.tokens:  # every token is compared: the time does not tell which one matched
            ok |= hmac.compare_digest(given, t)
        return ok


def _stored_token(path: Path) -> str:
    """The token in DIR/.serve-token, made (mode 0600, never through a symbolic link) when there is none."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # also a symbolic link, dangling or not: read_stored_token says so
        stored = read_stored_token(path)
        if stored is None:
            raise EvlogError(f"{path} vanished while it was read: try again") from None
        return stored
    except OSError as e:
        raise EvlogError(f"cannot create {path}: {e.strerror}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    return token

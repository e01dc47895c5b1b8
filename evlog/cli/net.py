"""`serve` and `subscribe`: the log over WebSocket."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from evlog.cli.basics import log_of, state
from evlog.cli.diag import diag
from evlog.cli.options import (
    FormatOpt,
    KeyOpt,
    SourceOpt,
    SubjectOpt,
    TypeOpt,
    WhereOpt,
    check_utf8,
    make_filter,
    out_format,
)
from evlog.errors import UsageError
from evlog.store.framing import Record

app = typer.Typer(add_completion=False)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Address to bind (loopback unless told otherwise).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port; 0 picks a free one.")
    ] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="EVLOG_TOKEN",
            show_envvar=True,
            help="The token clients must present (at least 7 characters; 16 or more advised).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="Tokens, one per line, each at least 7 characters; re-read when the file changes.",
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option("--allow-origin", metavar="ORIGIN", help="Allowed browser Origin (repeatable; exact match)."),
    ] = None,
    max_clients: Annotated[
        int | None, typer.Option("--max-clients", metavar="N", min=1, help="Refuse clients beyond N.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="FILE", help="TLS certificate (PEM) for wss://.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", metavar="FILE", help="TLS private key (PEM).")] = None,
) -> None:
    """Stream the log to authenticated WebSocket clients at /stream.

    Tokens have at least 7 characters (a shorter --token or EVLOG_TOKEN: exit 2); serve warns below 16.
    Without --token/--token-file/EVLOG_TOKEN a token is generated into
    DIR/.serve-token (mode 0600). An existing one must be a regular file of yours,
    not a symbolic link, closed to group and others (else exit 1: chmod 600 it,
    or remove it to have a new one generated).
    Example: evlog serve --port 8765 --token-file /etc/evlog/tokens
    """
    from evlog.cli.signals import Terminated
    from evlog.net import server
    from evlog.net.auth import Tokens

    check_utf8("--host", host)
    check_utf8("--token", token)
    check_utf8("--allow-origin", *(allow_origin or []))
    if token and token_file:
        raise UsageError("give --token or --token-file, not both")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    from evlog.consumers.state import local_dir

    log = log_of(ctx)
    tokens = Tokens(local_dir(log), token, token_file, report=diag.emit)
    signum = server.run(
        log,
        host=host,
        port=port,
        tokens=tokens,
        origins=list(allow_origin or []),
        max_clients=max_clients,
        tls_cert=tls_cert,
        tls_key=tls_key,
        report=diag.emit,
    )
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@app.command()
def subscribe(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The server's stream, e.g. ws://127.0.0.1:8765/stream.")],
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", help="The token (default: EVLOG_TOKEN, else DIR/.serve-token)."),
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", metavar="OFFSET|beginning|end", help="Where to start (default: end).")
    ] = None,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    format: FormatOpt = None,
    no_reconnect: Annotated[bool, typer.Option("--no-reconnect", help="Exit when the connection ends.")] = False,
) -> None:
    """Print events from an `evlog serve` endpoint like `read`; reconnects and resumes.

    Example: evlog subscribe ws://127.0.0.1:8765/stream --from beginning --type 'order.*'
    """
    from evlog.net import subscribe as sub

    check_utf8("URL", url)
    check_utf8("--token", token)
    if from_ is not None and from_ not in ("beginning", "end") and not (from_.isascii() and from_.isdigit()):
        raise UsageError(f"--from {from_!r}: use an offset, beginning or end")
    st = state(ctx)
    secret = sub.find_token(token, os.environ.get("EVLOG_TOKEN"), None if st.nats else st.dir)
    flt = make_filter(type_, key, subject, source, where)
    render = _record_renderer(out_format(format))
    out = sys.stdout.buffer

    def emit(text: str, rec: Record) -> None:
        out.write(render(text, rec))
        out.flush()

    code = sub.subscribe(url, secret, from_, flt, reconnect=not no_reconnect, emit=emit, report=diag.emit)
    if code:
        raise typer.Exit(code)


def _record_renderer(fmt: str) -> Callable[[str, Record], bytes]:
    """Render a record the server sent (its JSON text, decoded) in an output format."""
    import msgspec

    if fmt == "json":
        return lambda text, rec: text.encode() + b"\n"
    if fmt == "data":
        return lambda text, rec: msgspec.json.encode(rec.data) + b"\n"
    if fmt == "cloudevents":
        from evlog.ingest.event import cloudevent

        return lambda text, rec: msgspec.json.encode(cloudevent(rec)) + b"\n"
    from evlog.cli.pretty import PrettyRenderer

    pretty = PrettyRenderer(None)
    return lambda text, rec: pretty.render_record(rec)

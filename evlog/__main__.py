"""The `evlog` command (and `python -m evlog`).

A signal that arrives while the CLI is still being imported ends the process
quietly with the usual exit code (130 / 143), not with a traceback from the
middle of an import; `evlog.cli.app.main` installs the real handlers.
"""

import os
import signal


def _exit_quietly(signum: int, frame: object) -> None:
    os._exit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGINT, _exit_quietly)
    signal.signal(signal.SIGTERM, _exit_quietly)
    from evlog.cli.app import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()

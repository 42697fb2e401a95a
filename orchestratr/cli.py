"""The ``orchestratr`` command. ``daemon`` runs the supervisor in the foreground."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestratr import __version__


def _cmd_daemon(args: argparse.Namespace) -> int:
    # The daemon never speaks TLS (its API is plain HTTP on loopback), but structlog imports
    # asyncio, which loads OpenSSL if it can: about 4 MiB of resident memory for nothing.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    from orchestratr.daemon import Daemon, DaemonOptions  # keep `--help` fast

    options = DaemonOptions(
        config_dir=args.config_dir,
        port=args.port,
        hotkeys=not args.no_hotkeys,
        log_file=Path(args.log_file) if args.log_file else None,
    )
    return Daemon(options).run()


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"daemon": _cmd_daemon}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestratr", description="A local process supervisor for desktop apps."
    )
    parser.add_argument("--version", action="version", version=f"orchestratr {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    daemon = verbs.add_parser("daemon", help="run the supervisor in the foreground")
    daemon.add_argument(
        "--config-dir",
        metavar="DIR",
        help="config dir (default: $ORCHESTRATR_CONFIG_DIR, else the platform's user config dir)",
    )
    daemon.add_argument("--port", type=int, metavar="N", help="API port (0: any free port)")
    daemon.add_argument("--no-hotkeys", action="store_true", help="do not listen for hotkeys")
    daemon.add_argument("--log-file", metavar="F", help="write the JSON log here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)

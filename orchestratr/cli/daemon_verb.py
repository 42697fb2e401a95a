"""``orchestratr daemon``: the supervisor in the foreground (its log is JSON lines already)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestratr.cli.main import Context


def run(ctx: Context) -> int:
    from orchestratr.daemon import Daemon, DaemonOptions

    args = ctx.args
    options = DaemonOptions(
        config_dir=args.config_dir,
        port=args.port,
        hotkeys=not args.no_hotkeys,
        log_file=Path(args.log_file) if args.log_file else None,
    )
    return Daemon(options).run()

"""``orchestratr daemon``: the supervisor in the foreground.

Its log is JSON lines already; ``--json`` adds one JSON line on stdout once the daemon is up
(pid, port, config dir, version), so a script that starts it learns where it listens.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from orchestratr import __version__
from orchestratr.lean import keep_out_unused

if TYPE_CHECKING:
    from orchestratr.cli.main import Context
    from orchestratr.daemon import Daemon


def run(ctx: Context) -> int:
    keep_out_unused()
    from orchestratr.daemon import Daemon, DaemonOptions

    args = ctx.args
    daemon = Daemon(DaemonOptions(
        config_dir=args.config_dir,
        port=args.port,
        hotkeys=not args.no_hotkeys,
        log_file=Path(args.log_file) if args.log_file else None,
    ))
    if args.json:
        threading.Thread(target=_announce, args=(ctx, daemon), daemon=True).start()
    return daemon.run()


def _announce(ctx: Context, daemon: Daemon) -> None:
    if daemon.started.wait(timeout=60) and daemon.api is not None:
        ctx.out.line(json.dumps({
            "status": "started", "pid": os.getpid(), "port": daemon.api.port,
            "config_dir": str(daemon.paths.config_dir), "version": __version__,
        }))

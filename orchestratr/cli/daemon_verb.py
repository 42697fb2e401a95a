"""``orchestratr daemon``: the supervisor in the foreground.

Its log is JSON lines already; ``--json`` adds one JSON line on stdout once the daemon is up
(pid, port, config dir, version), so a script that starts it learns where it listens.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import types
from pathlib import Path
from typing import TYPE_CHECKING

from orchestratr import __version__

if TYPE_CHECKING:
    from orchestratr.cli.main import Context
    from orchestratr.daemon import Daemon


def run(ctx: Context) -> int:
    _lean_imports()
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


class _OnFirstUse(types.ModuleType):
    """A module imported for real the first time anything in it is used."""

    def __getattr__(self, name: str) -> object:
        del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        sys.modules[self.__name__] = real
        return getattr(real, name)


def _lean_imports() -> None:
    """Keep what the daemon never runs out of its memory (idle RSS, issue 16; measured with
    bench/supervisor.py, 100 apps): log output is the same without any of it.

    * rich: structlog renders with it when it can import it; it is here only when a test
      tool brought it (3.4 MiB).
    * ssl: asyncio imports it if it can, and the daemon speaks plain HTTP on loopback only
      (4.4 MiB: OpenSSL's libraries).
    * asyncio: structlog imports it for its async logging methods, which the daemon never
      calls; it is loaded on first use instead (1.5 MiB).
    """
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    if "asyncio" not in sys.modules:
        stub = _OnFirstUse("asyncio")
        stub.__spec__ = None
        sys.modules["asyncio"] = stub


def _announce(ctx: Context, daemon: Daemon) -> None:
    if daemon.started.wait(timeout=60) and daemon.api is not None:
        ctx.out.line(json.dumps({
            "status": "started", "pid": os.getpid(), "port": daemon.api.port,
            "config_dir": str(daemon.paths.config_dir), "version": __version__,
        }))

"""Modules the daemon never runs, kept out of its memory before anything imports them.

Imported first by ``orchestratr daemon``, and by the bench that measures the memory floor of
the libraries the daemon is built on (bench/supervisor.py): it imports nothing else of ours.
"""

from __future__ import annotations

import importlib
import sys
import types


class _OnFirstUse(types.ModuleType):
    """A module imported for real the first time anything in it is used."""

    def __getattr__(self, name: str) -> object:
        del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        sys.modules[self.__name__] = real
        return getattr(real, name)


def keep_out_unused() -> None:
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

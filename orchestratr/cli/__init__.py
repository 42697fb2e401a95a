"""The ``orchestratr`` command line (``main`` is the console script's entry point)."""

from orchestratr.cli.main import main

__all__ = ["main"]

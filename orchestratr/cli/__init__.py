"""The ``orchestratr`` command line (``main`` is the console script's entry point).

Client verbs reach the daemon only through ``orchestratr.client`` (HTTP) and read state names
from ``supervisor/states.py``; ``daemon_verb.py`` runs the daemon and ``doctor.py`` uses its
loaders, so they work with no daemon running. Heavy modules load only for the verb that needs
them.
"""

from orchestratr.cli.main import main

__all__ = ["main"]

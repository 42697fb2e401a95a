"""Leader key + chord: a thin event source over the supervisor.

``engine.py`` (pure) and ``service.py`` know keys only as ``registry.keys.Key`` and reach the
OS through ``backend.py``'s Protocol; X11 (pynput, python-xlib) lives in ``x11/`` alone. Nothing
here imports ``api/`` or ``processes/``.
"""

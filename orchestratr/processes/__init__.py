"""The OS side of apps: spawning (``spawn.py``, the supervisor's ``Launcher``), noticing exits
(``tracker.py``, pidfds in one epoll), ``ready_cmd`` probes (``readiness.py``) and the record
of running apps a restarted daemon adopts (``survivors.py``). psutil lives here only.

A thin adapter: it may use the core's types, never ``api/`` or ``hotkeys/``.
"""

"""The OS side of apps: spawning (``spawn.py``, the supervisor's ``Launcher``), noticing exits
(``tracker.py``, pidfds in one epoll, the subreaper's orphans), ``ready_cmd`` probes
(``readiness.py``), the durable record of running apps (``journal.py``, the supervisor's
``RunningRecord``), adoption of what an earlier daemon left running (``survivors.py``) and
reads of /proc (``proctable.py``). psutil lives here only.

A thin adapter: it may use the core's types, never ``api/`` or ``hotkeys/``.
"""

"""The core: every app's state machine, and the commands every event source calls.

``states.py`` is THE table (standard library only); ``machine.py`` builds the one
``transitions`` machine from it; ``app.py`` is an app's live state (the only writer of it);
``roster.py`` the apps by name; ``restarts.py`` and ``leases.py`` the restart policy and the
heartbeat-lease rules; ``core.py`` the ``Supervisor`` that drives them; ``bus.py`` the events
they publish; ``launcher.py`` the small interface through which the OS is reached.

May not import: ``api/``, ``hotkeys/``, ``processes/``, ``desktop/``, the daemon, the config
loader or watcher, or any HTTP, key or process library (``tests/test_architecture.py``).
"""

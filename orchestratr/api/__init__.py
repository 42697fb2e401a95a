"""The localhost HTTP + JSON API: a thin event source over the supervisor.

``server.py`` (http.server, one thread per connection) and ``transport.py`` (deadlines,
limits) carry requests; ``guard.py`` admits only loopback peers, hosts and origins;
``routes.py`` maps each endpoint to one supervisor call; ``wire.py`` shapes bodies in and out;
``sse.py`` streams the event bus; ``errors.py`` maps error codes to statuses; ``openapi.py``
documents it all, built from the same classes and constants.

Reaches hotkeys and the registry only through ``controls.py``'s Protocols; never imports
``hotkeys/`` or ``processes/``.
"""

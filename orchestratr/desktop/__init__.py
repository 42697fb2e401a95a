"""The desktop: what the user sees outside the terminal.

``windows.py`` raises an app's window (run-or-raise, EWMH over python-xlib),
``notifications.py`` shows failures as desktop notifications (freedesktop Notifications over
D-Bus with jeepney), ``chords.py`` draws the chord table on ``?``. The supervisor knows none of
it: it is handed the ``Windows`` port, and notifications follow the event bus. Every library
here is imported at first use, so a daemon with no desktop pays nothing.
"""

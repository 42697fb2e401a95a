"""The desktop beyond X11: ``notifications.py`` shows failures as desktop notifications
(freedesktop Notifications over D-Bus with jeepney, imported at first use), following the
event bus; the supervisor knows nothing of it. What the desktop does through X11 (raising an
app's window, the chord table) is in ``hotkeys/x11/``, where python-xlib lives.
"""

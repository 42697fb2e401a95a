"""Everything X11: pynput (XRecord) hears keys, python-xlib grabs the leader and its chord,
``ewmh.py`` raises an app's window (run-or-raise, the supervisor's ``Windows`` port) and
``chord_table.py`` draws the chord table.

The only place pynput and Xlib are imported; both lazily, after the display check, because
importing pynput without an X server raises.
"""

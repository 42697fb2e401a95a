"""The X11 backend: pynput (XRecord) hears keys, python-xlib grabs the leader and its chord.

The only place pynput and Xlib are imported for hotkeys; both are imported lazily, after the
display check, because importing pynput without an X server raises.
"""

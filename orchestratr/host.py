"""What the daemon says about the machine it runs on, in its start-up lines."""

from __future__ import annotations

import os
import sys


def platform_name() -> str:
    """``Linux-6.1.0-x86_64-with-glibc2.36``, as ``platform.platform()`` spells it on a
    system whose ``uname -p`` says "unknown" (Debian's, Ubuntu's), without its cost: it runs
    ``uname -p`` in a child process for that field, 6.5 ms of every start."""
    uname = os.uname()
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names \
        else None
    suffix = f"-with-{libc.replace(' ', '')}" if libc else ""
    return f"{uname.sysname}-{uname.release}-{uname.machine}{suffix}"


def python_version() -> str:
    return sys.version.split()[0]

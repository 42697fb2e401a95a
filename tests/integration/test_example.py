"""The README's worked example, as it is written: examples/talk/greeter.py (Python, with
client.py) and examples/talk/asker.sh (sh and curl) find each other through a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PYTHON, DaemonProcess, write_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "talk"


def test_the_shell_script_asks_the_python_app_which_is_launched_for_it(
    config_dir: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    write_config(config_dir, f"""\
apps:
  - name: greeter
    command: {PYTHON} {EXAMPLE / "greeter.py"}
  - name: asker
    command: sh {EXAMPLE / "asker.sh"}
""")
    daemon = start_daemon("--no-hotkeys")
    env = {**os.environ, "ORCHESTRATR_CONFIG_DIR": str(config_dir)}
    done = subprocess.run(["sh", str(EXAMPLE / "asker.sh")], capture_output=True, text=True,
                          env=env, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    sent, found, hello, answer = done.stdout.splitlines()
    assert json.loads(sent)["launched"] is True  # the greeter was stopped: launched for it
    assert found.startswith("found greeter-api on port ")
    assert json.loads(hello) == {"hello": "from the greeter"}
    replies = json.loads(answer)
    assert [(r["from"], r["data"]) for r in replies] == [
        ("greeter", {"greeting": "hello, ann"})]
    logged = daemon.wait_event("message_sent", sender="greeter", receiver="asker")
    assert logged["id"] == replies[0]["id"]

"""Where orchestratr keeps its files.

Precedence for the config dir: ``--config-dir`` > ``$ORCHESTRATR_CONFIG_DIR`` > the platform's
user config dir, found by ``client`` (apps and the CLI find the daemon by the same rules, and
``client`` must stay one standard-library file). Logs go to the platform's user log dir, except
when the config dir was chosen explicitly: then they go to ``<config-dir>/logs`` so tests and
second instances never write into the real home.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from orchestratr.client import CONFIG_DIR_ENV, platform_config_dir

APP_NAME = "orchestratr"
# Set in every app's environment (with CONFIG_DIR_ENV): a daemon restarted after a crash
# recognises the processes it may adopt by these two, which children inherit.
APP_ENV = "ORCHESTRATR_APP"


@attrs.frozen
class Paths:
    """Every per-user file of one orchestratr instance."""

    config_dir: Path
    log_dir: Path

    @classmethod
    def resolve(cls, config_dir: str | os.PathLike[str] | None = None) -> Paths:
        """Apply the precedence rules above."""
        chosen = config_dir or os.environ.get(CONFIG_DIR_ENV)
        if chosen:
            root = Path(chosen).expanduser().absolute()
            return cls(config_dir=root, log_dir=root / "logs")
        import platformdirs  # only here: with an explicit config dir it is never loaded

        return cls(config_dir=platform_config_dir(), log_dir=platformdirs.user_log_path(APP_NAME))

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yml"

    @property
    def apps_dir(self) -> Path:
        return self.config_dir / "apps.d"

    @property
    def port_file(self) -> Path:
        return self.config_dir / "port"

    @property
    def lock_file(self) -> Path:
        """Holds the daemon's pid; named as the Go orchestratr named it, so that its tools
        still read it."""
        return self.config_dir / "orchestratr.pid"

    @property
    def running_file(self) -> Path:
        """The apps running (as last compacted), for a daemon restarted after any exit."""
        return self.config_dir / "running.json"

    @property
    def running_journal(self) -> Path:
        """Changes to ``running_file`` since it was last compacted (see processes/journal.py)."""
        return self.config_dir / "running.journal"

    @property
    def registered_file(self) -> Path:
        """Apps registered through the API, kept across reloads and restarts."""
        return self.config_dir / "registered.json"

    @property
    def daemon_log(self) -> Path:
        return self.log_dir / "orchestratr.log"

    def app_log(self, name: str) -> Path:
        """The file an app's stdout and stderr go to."""
        return self.log_dir / "apps" / f"{log_stem(name)}.log"


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half file behind
        raise


def move_aside(path: Path) -> Path:
    """Rename a damaged state file to ``<name>.corrupt-<timestamp>`` (kept for a person to
    look at, out of the daemon's way); return the new path.

    Raises:
        OSError: it could not be renamed.
    """
    import time

    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    path.replace(target)
    return target


def log_stem(name: str) -> str:
    """An app name as a file name: itself when it is plain (letters, digits, ``._-`` and
    spaces, not hidden, not an option, a file name's length at most); otherwise its plain
    characters and a short hash of the name, so two names never share a log."""
    plain = "".join(c if c.isalnum() or c in "._- " else "_" for c in name)[:100]
    if plain == name and not name.startswith((".", "-")):
        return name
    import hashlib  # only for such names: it loads OpenSSL's libcrypto (3 MiB of idle RSS)

    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{plain.lstrip('.-')}-{digest}"

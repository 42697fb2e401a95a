"""How apps find the daemon: the port file, the taken-port fallback, and the client library."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestratr import __version__, client
from orchestratr.paths import Paths
from tests.conftest import DaemonProcess, write_config
from tests.integration.api.conftest import HttpApi, port_of


class TestPortFile:
    def test_written_after_binding_and_removed_on_clean_shutdown(
        self, config_dir: Path, start_daemon: Callable[..., DaemonProcess]
    ) -> None:
        daemon = start_daemon()
        port_file = config_dir / "port"
        text = port_file.read_text()
        assert text == f"{daemon.wait_event('api_listening')['port']}\n"
        assert stat.S_IMODE(port_file.stat().st_mode) == 0o644
        assert HttpApi(int(text)).get("/health").status == 200
        assert daemon.stop() == 0
        assert not port_file.exists()
        assert not [p for p in config_dir.iterdir() if p.name.startswith(".port")]

    def test_a_stale_one_from_a_killed_daemon_is_replaced(
        self, config_dir: Path, start_daemon: Callable[..., DaemonProcess]
    ) -> None:
        first = start_daemon()
        first.stop(signal.SIGKILL)
        stale = port_of(config_dir)
        with pytest.raises(client.NotRunningError, match=f"nothing on port {stale}"):
            client.Client(config_dir=config_dir).health()
        second = start_daemon()
        assert port_of(config_dir) == second.wait_event("api_listening")["port"]
        assert client.Client(config_dir=config_dir).health()["status"] == "ok"

    def test_a_taken_port_falls_back_to_a_free_one_with_a_warning(
        self, config_dir: Path, start_daemon: Callable[..., DaemonProcess]
    ) -> None:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            write_config(config_dir, f"api_port: {taken}\napps: []\n")
            daemon = start_daemon(port=None)
            warning = daemon.wait_event("api_port_taken")
            assert warning["wanted"] == taken and warning["level"] == "warning"
            assert port_of(config_dir) == warning["using"] != taken
            assert HttpApi(port_of(config_dir)).get("/health").status == 200

    def test_api_port_from_the_config_and_the_flag_over_it(
        self, config_dir: Path, start_daemon: Callable[..., DaemonProcess]
    ) -> None:
        configured, flagged = free_port(), free_port()
        write_config(config_dir, f"api_port: {configured}\napps: []\n")
        first = start_daemon(port=None)
        assert first.wait_event("api_listening")["port"] == port_of(config_dir) == configured
        first.stop()
        start_daemon(port=flagged)
        assert port_of(config_dir) == flagged


class TestClient:
    def test_every_call_against_a_real_daemon(
        self, serve: Callable[..., tuple[HttpApi, DaemonProcess]], config_dir: Path
    ) -> None:
        serve()
        c = client.Client(config_dir=config_dir)
        assert (c.health()["status"], c.health()["version"]) == ("ok", __version__)
        assert [a["name"] for a in c.apps()][:2] == ["notes", "sleeper"]
        outsider = subprocess.Popen(["sleep", "60"])
        try:
            assert c.notify_launched("notes", pid=outsider.pid)["pid"] == outsider.pid
            assert c.notify_ready("notes")["state"] == "ready"
            assert c.state("notes")["ready"] is True
            assert c.notify_stopped("notes")["state"] == "stopping"
        finally:
            outsider.kill()
            outsider.wait()
        launched = c.launch("sleeper")
        assert launched["spawned"] is True and c.app("sleeper")["pid"] == launched["pid"]
        assert c.restart("sleeper")["status"] == "ok"
        assert c.stop("sleeper")["state"] in ("stopping", "stopped")
        assert c.trigger("x")["app"] == "extra"
        assert "notes" in [a["name"] for a in c.reload()["apps"]]

    def test_errors_carry_status_and_code(
        self, serve: Callable[..., tuple[HttpApi, DaemonProcess]], config_dir: Path
    ) -> None:
        serve()
        c = client.Client(config_dir=config_dir)
        with pytest.raises(client.OrchestratrClientError, match="'nosuch' not found") as caught:
            c.notify_ready("nosuch")
        assert (caught.value.status, caught.value.code) == (404, "not_found")
        with pytest.raises(client.OrchestratrClientError) as caught:
            c.trigger()
        assert (caught.value.status, caught.value.code) == (503, "unavailable")
        assert not isinstance(caught.value, client.NotRunningError)

    def test_names_are_escaped_in_urls(
        self, serve: Callable[..., tuple[HttpApi, DaemonProcess]], config_dir: Path
    ) -> None:
        """The Go CLI did not escape names (B18): ``a/launch`` must not reach another route."""
        serve()
        with pytest.raises(client.OrchestratrClientError) as caught:
            client.Client(config_dir=config_dir).state("notes/launch")
        assert (caught.value.status, caught.value.code) == (400, "bad_request")

    def test_module_functions_find_the_daemon_through_the_environment(
        self, serve: Callable[..., tuple[HttpApi, DaemonProcess]], config_dir: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        serve()
        monkeypatch.setenv("ORCHESTRATR_CONFIG_DIR", str(config_dir))
        assert client.health()["status"] == "ok"
        assert client.notify_ready("notes")["state"] == "ready"
        monkeypatch.delenv("ORCHESTRATR_CONFIG_DIR")
        monkeypatch.setenv("ORCHESTRATR_URL", f"http://127.0.0.1:{port_of(config_dir)}")
        assert client.apps()[0]["state"] == "ready"

    def test_no_port_file_means_not_running(self, tmp_path: Path) -> None:
        with pytest.raises(client.NotRunningError, match="not running"):
            client.Client(config_dir=tmp_path).health()

    def test_a_garbled_port_file_means_not_running(self, tmp_path: Path) -> None:
        (tmp_path / "port").write_text("eighty\n")
        with pytest.raises(client.NotRunningError, match="does not hold a port number"):
            client.Client(config_dir=tmp_path).health()

    @pytest.mark.parametrize("xdg", [None, "/tmp/xdg-elsewhere"])
    def test_default_config_dir_matches_the_daemons(
        self, monkeypatch: pytest.MonkeyPatch, xdg: str | None
    ) -> None:
        """The client cannot import platformdirs, so it recomputes the same place."""
        monkeypatch.delenv("ORCHESTRATR_CONFIG_DIR", raising=False)
        if xdg is None:
            monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
        assert client.default_config_dir() == Paths.resolve().config_dir
        monkeypatch.setenv("ORCHESTRATR_CONFIG_DIR", "/tmp/somewhere")
        assert client.default_config_dir() == Paths.resolve().config_dir == Path("/tmp/somewhere")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

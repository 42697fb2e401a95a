"""The dispatcher's choice of the connection to let go when the server is full."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from orchestratr.api.dispatch import Dispatcher


@pytest.fixture
def dispatcher() -> Iterator[tuple[Dispatcher, list[object]]]:
    listener = socket.create_server(("127.0.0.1", 0))
    closed: list[object] = []
    made = Dispatcher(listener, accept=lambda sock, peer: sock, serve=lambda conn: None,
                      close=closed.append, idle_s=60)
    yield made, closed
    listener.close()


def _pair() -> tuple[socket.socket, socket.socket]:
    server_side, client_side = socket.socketpair()
    server_side.settimeout(5)  # as the server's own connections have one
    return server_side, client_side


def test_a_connection_whose_request_waits_is_not_shed(
    dispatcher: tuple[Dispatcher, list[object]],
) -> None:
    """Parked first but with its request already arrived, it is busy, not idle: the idle
    one behind it goes (closing the first left a client with no answer at all)."""
    made, closed = dispatcher
    waiting, waiting_client = _pair()
    idle, idle_client = _pair()
    made.park("waiting", waiting)
    made.park("idle", idle)
    waiting_client.sendall(b"GET /health HTTP/1.1\r\n\r\n")
    assert made.shed_idle() is True
    assert closed == ["idle"]
    assert made.shed_idle() is False  # the waiting one is never let go
    for sock in (waiting, waiting_client, idle, idle_client):
        sock.close()


def test_the_longest_idle_goes_first(dispatcher: tuple[Dispatcher, list[object]]) -> None:
    made, closed = dispatcher
    pairs = [_pair() for _ in range(3)]
    for index, (server_side, _) in enumerate(pairs):
        made.park(index, server_side)
    assert made.shed_idle() and made.shed_idle()
    assert closed == [0, 1] and made.idle_count() == 1
    for server_side, client_side in pairs:
        server_side.close()
        client_side.close()

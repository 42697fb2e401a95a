"""Who serves which connection, and when: one selector thread and a small pool of workers.

A thread per connection made every new connection start a thread while all the others fought
for the GIL: under load a connection's first request waited up to seconds before it was read
(issue 12, item 9). Here one thread (``Dispatcher``) accepts in batches and watches every idle
keep-alive connection; a connection with bytes waiting goes to the workers, first come first
served, and comes back after its answer. A few workers take turns on the CPU, so a request waits
for the ones ahead of it, never for a lottery among hundreds of threads. The pool grows past
``CORE_WORKERS`` only when the workers are stuck: work has waited ``GROW_AFTER_S`` and none of
them finished a job meanwhile (slow clients). Work merely queueing under load is no reason:
growing on it (64 busy keep-alive clients queue ~20 ms of work all the time) doubled the
threads that take turns on the GIL, and every extra one lengthened the tail (wrk, 64 clients:
max 83-114 ms grown, 65-74 ms not). The pool shrinks back when idle.

The selector also notices event-stream readers hanging up (their handler threads are blocked
on the event queue, not on the socket). Nothing in here blocks while holding the lock, and the
wake-up pipe is written without blocking (a full pipe already means "wake up"): a blocking
write there wedged the whole daemon when hundreds of readers hung up together (item 1).
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from functools import partial
from typing import Any

import structlog

from orchestratr.fds import readable

log = structlog.get_logger("orchestratr.api")

CORE_WORKERS = 4  # enough to keep 2 cores busy while one waits on a client
GROW_AFTER_S = 0.05  # work waiting this long while no job ends: the workers are stuck
WORKER_IDLE_S = 0.5  # a worker beyond the core ends after this long without work
ACCEPT_BATCH = 64  # connections accepted per wake-up before the others get a turn
ACCEPT_BACKOFF_S = 0.01  # out of descriptors: accepting pauses this long, doubled per failure
ACCEPT_LOG_EVERY_S = 60.0  # a shortage that comes and goes is logged once in this long
MAX_ACCEPT_BACKOFF_S = 1.0  # ... up to this (the listener stays readable: retrying at once
# spun a whole core, issue 16)
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

Job = Callable[[], None]


class Workers:
    """A first-in first-out pool of threads, grown on demand up to ``limit``."""

    def __init__(self, limit: int, core: int = CORE_WORKERS) -> None:
        self._limit = max(1, limit)
        self._core = min(core, self._limit)
        self._jobs: deque[tuple[float, Job]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._count = 0  # threads alive
        self._idle = 0  # threads waiting for a job
        self._done_at = time.monotonic()  # when a job last ended
        self._stopped = False

    def start(self) -> None:
        """Start the core workers, so the first requests find them waiting."""
        with self._cond:
            while self._count < self._core:
                self._start()

    def submit(self, job: Job) -> None:
        with self._cond:
            self._jobs.append((time.monotonic(), job))
            if len(self._jobs) > self._idle and self._count < self._core:
                self._start()
            self._cond.notify()

    def waiting(self) -> bool:
        """Whether work is waiting; starts another worker if the busy ones are stuck."""
        with self._cond:
            if not self._jobs:
                return False
            now = time.monotonic()
            stuck = now - max(self._jobs[0][0], self._done_at) >= GROW_AFTER_S
            if stuck and not self._idle and self._count < self._limit:
                self._start()
            return True

    @property
    def count(self) -> int:
        return self._count

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._jobs.clear()
            self._cond.notify_all()

    def _start(self) -> None:
        self._count += 1
        threading.Thread(target=self._work, name="api-worker", daemon=True).start()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                job()
            except Exception:  # a job logs its own failures; this keeps the worker alive
                log.exception("http_worker_error")
            self._done_at = time.monotonic()  # read by waiting(): a float store needs no lock

    def _next(self) -> Job | None:
        with self._cond:
            while not self._jobs:
                if self._stopped:
                    self._count -= 1
                    return None
                self._idle += 1
                woken = self._cond.wait(None if self._count <= self._core else WORKER_IDLE_S)
                self._idle -= 1
                if not woken and not self._jobs and self._count > self._core:
                    self._count -= 1
                    return None
            return self._jobs.popleft()[1]


class Dispatcher:
    """The selector thread: accepts, hands readable connections to ``serve``, closes idle ones.

    ``accept(sock, peer)`` returns the connection's object (``serve`` is called with it each
    time it has bytes waiting) or None when it was turned away. ``park`` gives a served
    connection back until its next request; ``watch``/``forget`` follow an event stream's
    socket for a hang-up.
    """

    def __init__(
        self,
        listener: socket.socket,
        accept: Callable[[socket.socket, Any], Any],
        serve: Callable[[Any], None],
        close: Callable[[Any], None],
        idle_s: float,
    ) -> None:
        self._listener = listener
        self._accept = accept
        self._serve = serve
        self._close = close
        self._idle_s = idle_s
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._idle: OrderedDict[Any, tuple[socket.socket, float]] = OrderedDict()
        self._hangups: dict[socket.socket, Callable[[], None]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, self._accept_batch)
        self._stopping = False
        self._accept_paused_until: float | None = None
        self._accept_backoff = 0.0
        self._shortage_logged_at: float | None = None  # when http_accept_failed was last said
        self._shortage_said = False  # ... for the shortage going on now
        self.pool: Workers | None = None

    # ------------------------------------------------------------ from any thread

    def park(self, conn: Any, sock: socket.socket) -> None:
        """Wait for ``conn``'s next request (at most ``idle_s``), without a thread."""
        with self._lock:
            stopping, was_empty = self._stopping, not self._idle
            if not stopping:
                self._idle[conn] = (sock, time.monotonic() + self._idle_s)
                self._selector.register(sock, selectors.EVENT_READ, conn)
        if stopping:
            self._close(conn)
        elif was_empty:
            self.wake()  # the selector may be waiting with no deadline at all

    def shed_idle(self) -> bool:
        """Close the connection idle the longest (room for a new one); False if none is.

        A parked connection whose request has arrived but not yet been dispatched is not
        idle: closing it would leave its client with no answer at all.
        """
        with self._lock:
            conn = next((c for c, (s, _) in self._idle.items() if not _has_bytes(s)), None)
            if conn is None:
                return False
            sock, _ = self._idle.pop(conn)
            self._selector.unregister(sock)
        self._close(conn)
        return True

    def watch(self, sock: socket.socket, on_hangup: Callable[[], None]) -> None:
        with self._lock:
            if self._stopping:
                on_hangup()
                return
            self._hangups[sock] = on_hangup
            self._selector.register(sock, selectors.EVENT_READ, on_hangup)

    def forget(self, sock: socket.socket) -> None:
        """Stop watching ``sock``; must be called before it is closed."""
        with self._lock:
            if self._hangups.pop(sock, None) is not None:
                self._selector.unregister(sock)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is pending anyway
            self._wake_w.send(b"x")

    def idle_count(self) -> int:
        return len(self._idle)

    # ------------------------------------------------------------ the selector thread

    def run(self) -> None:
        """Dispatch until ``stop``; then close every idle connection and end every stream.
        An exception leaves everything open: ``threads.supervised`` logs it and runs this
        again (connections wait meanwhile in the selector, level-triggered)."""
        while not self._stopping:
            for key, _ in self._selector.select(self._timeout()):
                self._ready(key)
            self._expire()
            self._resume_accepting()
        self._shutdown()

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    def _timeout(self) -> float | None:
        pending = self.pool is not None and self.pool.waiting()
        with self._lock:
            first = next(iter(self._idle.values()), None)
        timeout = None if first is None else max(0.0, first[1] - time.monotonic())
        if pending:
            timeout = GROW_AFTER_S if timeout is None else min(timeout, GROW_AFTER_S)
        if self._accept_paused_until is not None:
            left = max(0.0, self._accept_paused_until - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        return timeout

    def _ready(self, key: selectors.SelectorKey) -> None:
        if key.fileobj in (self._wake_r, self._listener):
            key.data()
            return
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        with self._lock:
            if sock in self._hangups:
                if self._still_there(sock):
                    return
                on_hangup = self._hangups.pop(sock)
                self._selector.unregister(sock)
            elif self._idle.pop(key.data, None) is not None:
                self._selector.unregister(sock)
                on_hangup = None
            else:
                return  # shed or forgotten meanwhile
        if on_hangup is not None:
            _quietly(on_hangup)
        else:
            self._serve(key.data)

    def _accept_batch(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: leave the rest in the queue
                if exc.errno in OUT_OF_DESCRIPTORS:
                    self._pause_accepting(exc)
                else:
                    log.error("http_accept_failed", error=str(exc))
                return
            if self._accept_backoff:
                if self._shortage_said:
                    log.warning("http_accept_resumed")
                self._accept_backoff = 0.0
            sock.setblocking(True)
            conn = _quietly(partial(self._accept, sock, peer))
            if conn is not None:
                self.park(conn, sock)

    def _pause_accepting(self, exc: OSError) -> None:
        """Stop watching the listener for a while: connections wait in the kernel's queue,
        and the others are served meanwhile. Said once, and again only a minute later: near
        the limit, each connection that closes ends a shortage that the next one starts."""
        now = time.monotonic()
        if not self._accept_backoff:
            last = self._shortage_logged_at
            self._shortage_said = last is None or now - last >= ACCEPT_LOG_EVERY_S
            if self._shortage_said:
                self._shortage_logged_at = now
                log.error("http_accept_failed", error=exc.strerror,
                          hint="out of file descriptors: new connections wait until some "
                               "close; stop apps or raise the hard limit (ulimit -Hn)")
        self._accept_backoff = min(max(self._accept_backoff * 2, ACCEPT_BACKOFF_S),
                                   MAX_ACCEPT_BACKOFF_S)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._accept_paused_until = now + self._accept_backoff

    def _resume_accepting(self) -> None:
        if self._accept_paused_until is None or time.monotonic() < self._accept_paused_until:
            return
        self._accept_paused_until = None
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept_batch)

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _expire(self) -> None:
        """Close keep-alive connections that sent nothing for ``idle_s``, without a word (an
        answer nobody asked for would be read as the answer to the client's next request)."""
        now = time.monotonic()
        expired = []
        with self._lock:
            while self._idle:
                conn, (sock, deadline) = next(iter(self._idle.items()))
                if deadline > now:
                    break
                del self._idle[conn]
                self._selector.unregister(sock)
                expired.append(conn)
        for conn in expired:
            _quietly(partial(self._close, conn))

    def _shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            idle = list(self._idle)
            self._idle.clear()
            hangups = list(self._hangups.values())
        for conn in idle:
            _quietly(partial(self._close, conn))
        for on_hangup in hangups:
            _quietly(on_hangup)
        if self.pool is not None:
            self.pool.stop()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    @staticmethod
    def _still_there(sock: socket.socket) -> bool:
        """Drop what a stream's reader sent; False once it has hung up."""
        try:
            return bool(sock.recv(4096, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return True
        except OSError:
            return False


def _quietly(call: Callable[[], Any]) -> Any:
    """Run ``call`` on the selector thread; an exception is logged, never the thread's end."""
    try:
        return call()
    except Exception:
        log.exception("http_dispatch_error")
        return None


def _has_bytes(sock: socket.socket) -> bool:
    """Whether the client has sent something not read yet (or hung up: also not idle). Asked
    of poll, not recv: a socket with a timeout waits out the timeout even when told not to
    wait."""
    try:
        return bool(readable([sock], 0))
    except (OSError, ValueError):  # closed meanwhile
        return True

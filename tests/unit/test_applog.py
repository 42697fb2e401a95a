"""An app's log file read from its end and followed across rotations (applog.py), and the pump
that writes it (processes/output.py) rotating at line boundaries: real files, real pipes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from orchestratr import applog
from orchestratr.processes.output import OutputPump
from tests.conftest import wait_for


def write(path: Path, text: str) -> None:
    path.write_bytes(text.encode())


class TestTail:
    def test_the_last_lines_and_a_line_still_being_written(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        write(path, "one\ntwo\nthree\nhalf")
        assert applog.tail(path, 2) == ["three", "half"]
        assert applog.tail(path, 10) == ["one", "two", "three", "half"]
        assert applog.tail(path, 0) == []

    def test_no_file_no_lines(self, tmp_path: Path) -> None:
        assert applog.tail(tmp_path / "none.log", 5) == []

    def test_a_big_file_is_read_from_its_end(self, tmp_path: Path) -> None:
        """Lines spanning many blocks, and a count that ends inside one: exact lines, no
        fragment of the line before them."""
        path = tmp_path / "a.log"
        write(path, "".join(f"{i:07d} {'x' * 50}\n" for i in range(200_000)))
        lines = applog.tail(path, 1000)
        assert lines == [f"{i:07d} {'x' * 50}" for i in range(199_000, 200_000)]

    def test_fewer_lines_than_asked_come_with_the_rotated_files_end(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.log"
        write(applog.rotated(path, 1), "a\nb\nc\n")
        write(path, "d\n")
        assert applog.tail(path, 3) == ["b", "c", "d"]

    def test_the_last_line_for_an_error_is_never_a_header(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        path.write_bytes(applog.header("true"))
        assert applog.last_line(path) == ""
        with path.open("ab") as handle:
            handle.write(b"sh: 1: nope: not found\n\n")
        assert applog.last_line(path) == "sh: 1: nope: not found"

    def test_the_last_line_comes_from_what_the_writer_kept(self, tmp_path: Path) -> None:
        """On an exit's path the quote comes from the bytes the pump kept, not from the file:
        here the file does not even exist."""
        absent = tmp_path / "absent.log"
        recent = applog.Recent()
        recent.add(applog.header("sh -c 'echo hi; exit 3'"))
        assert applog.last_line(absent, recent) == ""
        recent.add(b"hi\nbye\n\n")
        assert applog.last_line(absent, recent) == "bye"
        recent.add(b"half a line")
        assert applog.last_line(absent, recent) == "half a line"
        recent.add(applog.header("true"))  # a new run: the last one's lines are no output
        assert applog.last_line(absent, recent) == ""

    def test_a_line_the_writer_kept_only_the_end_of_is_read_from_the_file(
        self, tmp_path: Path
    ) -> None:
        """Past ``RECENT_BYTES`` the first bytes kept may be the end of a longer line; and an
        adopted app's writer kept nothing of what came before it: the file tells."""
        path = tmp_path / "a.log"
        long_line = "x" * 400 + "y" * (applog.RECENT_BYTES + 100)
        path.write_bytes(applog.header("talk") + long_line.encode() + b"\n")
        recent = applog.Recent()
        recent.add(applog.header("talk"))
        recent.add(long_line.encode() + b"\n")
        assert applog.last_line(path, recent) == long_line[:300]
        assert applog.last_line(path, applog.Recent()) == long_line[:300]
        assert applog.last_line(path, applog.Recent(b"yyy\n")) == long_line[:300]
        many = applog.Recent(b"tail of something\na\nb\nc\n")
        assert applog.last_line(path, many) == "c"  # three whole lines: the cut one is not needed


class TestHeader:
    def test_a_header_is_read_back_as_a_launch(self) -> None:
        for command in ("sleep 60", "echo \"it's\" | tr a-z A-Z", "printf 'a\\tb\\n'"):
            line = applog.header(command, at=1_800_000_000).decode().rstrip("\n")
            assert applog.parse_header(line) == applog.Launch(command, 1_800_000_000.0)
        written_by_hand = "--- orchestratr: 2027-01-15T08:00:00+0000 launching sleep 60"
        assert applog.parse_header(written_by_hand).command == "sleep 60"  # type: ignore[union-attr]
        assert applog.parse_header("--- orchestratr: not a header") is None


def feed(pump: OutputPump, path: Path, data: bytes) -> None:
    """Write ``data`` as an app would, through the pump's pipe, then end the run."""
    fd = pump.open(path, "app")
    os.write(fd, data)
    os.close(fd)
    pump.drain(path)


class TestPump:
    def test_rotation_happens_between_lines_and_keeps_every_line(self, tmp_path: Path) -> None:
        pump = OutputPump(max_bytes=100)
        path = tmp_path / "a.log"
        lines = b"".join(b"line %02d\n" % i for i in range(30))  # 240 bytes
        feed(pump, path, lines)
        files = [applog.rotated(path, i) for i in (3, 2, 1)] + [path]
        contents = [f.read_bytes() for f in files]
        assert all(len(c) <= 100 and c.endswith(b"\n") for c in contents)
        assert b"".join(contents).partition(b"\n")[2] == lines
        pump.close()

    def test_a_line_longer_than_a_file_is_cut_where_the_file_is_full(
        self, tmp_path: Path
    ) -> None:
        pump = OutputPump(max_bytes=100)
        path = tmp_path / "a.log"
        feed(pump, path, b"x" * 250 + b"\n")
        files = [applog.rotated(path, i) for i in (3, 2, 1)] + [path]
        assert [len(f.read_bytes()) for f in files] == [len(applog.header("app")), 100, 100, 51]
        assert files[0].read_bytes().startswith(b"--- orchestratr: ")  # the line starts afresh
        pump.close()

    def test_a_run_that_ended_is_let_go_by_the_pumps_thread(self, tmp_path: Path) -> None:
        """The exit's drain copies the last bytes but leaves the pipe to the pump's thread,
        which lets it go a moment later (off the exit's path): nothing is lost, no descriptor
        is left behind, and the last line is quoted from what the pump kept."""
        descriptors = len(os.listdir("/proc/self/fd"))
        pump = OutputPump()
        pump.start()
        try:
            path = tmp_path / "a.log"
            fd = pump.open(path, "app")
            recent = pump.recent(path)
            os.write(fd, b"working\nbye\n")
            os.close(fd)
            pump.drain(path)
            assert path.read_bytes().endswith(b"working\nbye\n")
            assert applog.last_line(tmp_path / "absent.log", recent) == "bye"
            wait_for(lambda: pump.open_pipes == 0, timeout=5, what="the ended pipe let go")
        finally:
            pump.stop()
            pump.close()
        assert len(os.listdir("/proc/self/fd")) == descriptors

    def test_a_run_writing_without_pause_is_copied_whole(self, tmp_path: Path) -> None:
        """Each pipe is armed for one event at a time: it must be armed again after every
        read, or a writer that fills the pipe (64 KiB) would wait for good."""
        pump = OutputPump()
        pump.start()
        try:
            path = tmp_path / "a.log"
            fd = pump.open(path, "app")
            data = b"".join(b"%07d\n" % i for i in range(200_000))  # 1.6 MB, 25 pipes full
            writer = threading.Thread(target=lambda: (os.write(fd, data), os.close(fd)),
                                      daemon=True)  # stuck for good, if nobody reads
            writer.start()
            writer.join(timeout=20)
            assert not writer.is_alive(), "the writer waits on a pipe nobody reads"
            wait_for(lambda: pump.open_pipes == 0, timeout=10, what="the pipe read to its end")
            assert path.read_bytes().partition(b"\n")[2] == data
        finally:
            pump.stop()
            pump.close()


class TestFollower:
    def test_a_reader_behind_by_two_rotations_reads_every_file(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        write(path, "old\n")
        follower = applog.Follower(path, backlog=1)
        assert [line.text for line in follower.backlog()] == ["old"]
        with path.open("ab") as handle:
            handle.write(b"1\n")
        applog.rotate(path)
        write(path, "2\n")
        applog.rotate(path)
        write(path, "3\npart")
        got = []
        for _ in range(20):
            lines = follower.read()
            if lines is None:
                break
            got += [line.text for line in lines]
        assert got == ["1", "2", "3"]
        with path.open("ab") as handle:
            handle.write(b"ial\n")
        assert [line.text for line in follower.read() or []] == ["partial"]
        follower.close()

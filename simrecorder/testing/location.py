"""The contract every :class:`~simrecorder.locations.Location` must meet.

Each location's test module subclasses :class:`LocationTests`, provides a ``location``
fixture (an empty location) and states what the kind of location can do::

    class TestMyLocation(LocationTests):
        crash_safe_writes = True  # a SIGKILL mid-write never leaves a partial value

        @pytest.fixture
        def location(self, tmp_path):
            return MyLocation(tmp_path / "data")

        def declining_location(self, location):
            return MyLocation(location.root, read_only=True)  # or None: cannot decline

Capabilities of the test class (override as class attributes):

``crash_safe_writes``
    Run the SIGKILL test: a child killed while writing a large value leaves the old
    value (or nothing) under the key, never a part.
``shared_between_processes``
    Run the 4-process test (default: when the location is ``persistent``).
``reopens_by_url``
    ``open_location(location.url) == location`` (default: when ``persistent``).
``mp_start_method``
    How child processes are started (``"spawn"`` by default: no inherited sockets).
``lock_expiry_seconds``
    For locations with ``supports_locking``: how long the lock of a SIGKILLed holder
    outlives it (``0``: freed at once, as an ``flock``; a Redis lease: its
    ``lock_ttl``, which the fixture should make short).

Requires pytest (``pip install 'simrecorder[test]'``).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from typing import IO, Any, ClassVar, cast

import pytest

from simrecorder.errors import InvalidArgumentError, InvalidKeyError, StoreLockedError
from simrecorder.locations import Location

__all__ = ["LocationTests", "UnseekableStream"]

GLOB_KEYS = ["a*b", "q?", "[x]", "br[!a]ce", "star/*", "ü/é", "with space", "tab-less ~$#%&"]
INVALID_KEYS = ["../x", "/a", "a//b", "", "a/", "a/./b", "nul\x00"]
KIB = 1024
MIB = 1024 * KIB


class UnseekableStream(io.RawIOBase):
    """A readable binary stream that cannot seek (as a pipe or a socket).

    Parameters
    ----------
    data
        The bytes the stream yields.
    piece
        Largest number of bytes one ``read`` returns (short reads, as a pipe gives).
    """

    def __init__(self, data: bytes, piece: int = 4096) -> None:
        self._data = memoryview(data)
        self._offset = 0
        self._piece = piece

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self._piece, len(self._data) - self._offset)
        buffer[:size] = self._data[self._offset : self._offset + size]
        self._offset += size
        return size


class _SlowStream(io.RawIOBase):
    """Yields ``size`` bytes of ``fill``: the first half fast, then slowly, setting
    ``started`` once half is read (the location is then surely mid-write)."""

    def __init__(self, size: int, fill: bytes, started: Any, pause: float = 0.05) -> None:
        self._size = size
        self._left = size
        self._fill = fill
        self._started = started
        self._pause = pause

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), 64 * KIB, self._left)
        buffer[:size] = self._fill * size
        self._left -= size
        if self._started.is_set():
            time.sleep(self._pause)
        elif self._left <= self._size // 2:
            self._started.set()
        return size


def _pipe_stream(data: bytes) -> tuple[IO[bytes], threading.Thread]:
    """A real OS pipe carrying ``data`` (a thread feeds the write end)."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb", buffering=0) as sink:
            view = memoryview(data)
            while view:
                view = view[sink.write(view[: 64 * KIB]) or 0 :]

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    return open(read_fd, "rb", buffering=0), feeder


def _value(tag: int, size: int) -> bytes:
    """A value whose every byte says which writer made it (a mix shows interleaving)."""
    return bytes([tag]) * size


def _write_repeatedly(location: Location, key: str, tag: int, size: int, barrier: Any) -> None:
    barrier.wait(timeout=60)
    for _ in range(5):
        assert location.write(key, _value(tag, size))


def _write_slowly(location: Location, key: str, size: int, started: Any) -> None:
    location.write(key, cast(IO[bytes], _SlowStream(size, b"N", started)))
    time.sleep(60)  # never reached in the test: the parent kills us mid-write


def _hold_lock(location: Location, name: str, taken: Any) -> None:
    location.lock(name)
    taken.set()
    time.sleep(120)  # never reached in the test: the parent kills us


def _try_lock(location: Location, name: str, result: Any) -> None:
    try:
        location.lock(name).release()
        result.put("taken")
    except StoreLockedError as exc:
        result.put(f"locked: {exc}")


class _ConsumerError(Exception):
    """Raised inside ``with location.read(key)`` to check it propagates unchanged."""


class LocationTests:
    """The behaviour every location shares. Subclass it and provide ``location``."""

    crash_safe_writes: ClassVar[bool] = False
    shared_between_processes: ClassVar[bool | None] = None
    reopens_by_url: ClassVar[bool | None] = None
    mp_start_method: ClassVar[str] = "spawn"
    #: Size of the value the SIGKILL test writes (large enough to be mid-write).
    crash_value_bytes: ClassVar[int] = 4 * MIB
    #: Seconds the lock of a SIGKILLed holder outlives it (0: freed at once).
    lock_expiry_seconds: ClassVar[float] = 0.0

    @pytest.fixture
    def location(self) -> Iterator[Location]:
        """An empty location of the kind under test (override)."""
        raise NotImplementedError("subclasses provide the `location` fixture")

    def declining_location(self, location: Location) -> Location | None:
        """A location of the same kind that declines every write (read-only or full),
        or ``None`` when this kind cannot decline (the test is then skipped)."""
        return None

    # -- round trips ------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "seekable"])
    def test_round_trip(self, location: Location, kind: str) -> None:
        value = os.urandom(3000)
        data: Any = {
            "bytes": value,
            "bytearray": bytearray(value),
            "memoryview": memoryview(value),
            "seekable": io.BytesIO(value),
        }[kind]
        assert location.write("k", data) is True
        assert location.get("k") == value
        with location.read("k") as stream:
            assert stream is not None
            assert stream.read(10) == value[:10]
            assert stream.read() == value[10:]

    def test_round_trip_unseekable_stream(self, location: Location) -> None:
        value = os.urandom(200 * KIB + 7)
        stream = cast(IO[bytes], UnseekableStream(value, piece=1000))
        assert location.write("k", stream) is True
        assert location.get("k") == value

    def test_round_trip_pipe(self, location: Location) -> None:
        value = os.urandom(300 * KIB + 1)
        stream, feeder = _pipe_stream(value)
        with stream:
            assert location.write("k", stream) is True
        feeder.join(timeout=10)
        assert location.get("k") == value

    def test_stream_from_offset(self, location: Location) -> None:
        stream = io.BytesIO(b"headerBODY")
        stream.seek(6)
        assert location.write("k", stream)
        assert location.get("k") == b"BODY"

    def test_empty_value(self, location: Location) -> None:
        assert location.write("empty", b"")
        assert location.get("empty") == b""
        assert location.exists("empty")
        assert list(location.keys()) == ["empty"]
        with location.read("empty") as stream:
            assert stream is not None and stream.read() == b""

    def test_all_byte_values(self, location: Location) -> None:
        value = bytes(range(256)) * 4 + b"\r\n\n\r\x00"
        assert location.put("bin", value)
        assert location.get("bin") == value

    def test_overwrite(self, location: Location) -> None:
        assert location.put("k", b"first, longer value")
        assert location.put("k", b"second")
        assert location.get("k") == b"second"
        assert list(location.keys()) == ["k"]

    def test_bad_data_type(self, location: Location) -> None:
        with pytest.raises(TypeError):
            location.write("k", "text is not bytes")  # type: ignore[arg-type]
        assert not location.exists("k")

    # -- missing keys -----------------------------------------------------------------------

    def test_missing_key(self, location: Location) -> None:
        with location.read("nope") as stream:
            assert stream is None
        assert location.get("nope") is None
        assert location.exists("nope") is False
        assert "nope" not in location
        assert location.delete("nope") is False
        assert location.read_many(["nope"]) == {"nope": None}

    def test_delete(self, location: Location) -> None:
        location.put("a/b/c", b"1")
        location.put("a/x", b"2")
        assert location.delete("a/b/c") is True
        assert location.get("a/b/c") is None
        assert location.delete("a/b/c") is False
        assert list(location.keys()) == ["a/x"]
        assert location.delete_many(["a/x", "zz"]) == 1
        assert list(location.keys()) == []

    def test_folder_is_not_a_value(self, location: Location) -> None:
        location.put("dir/leaf", b"1")
        assert location.get("dir") is None
        assert location.exists("dir") is False
        assert location.delete("dir") is False
        assert location.get("dir/leaf") == b"1"

    # -- keys -------------------------------------------------------------------------------

    def test_keys_sorted(self, location: Location) -> None:
        names = ["b", "a0", "a/b", "a-c", "a/a/z", "c/d/e/f", "B"]
        for name in names:
            assert location.put(name, name.encode())
        assert list(location.keys()) == sorted(names)
        for name in names:
            assert location.get(name) == name.encode()

    def test_keys_prefix(self, location: Location) -> None:
        for name in ["a/b/c", "a/bc", "a/bd/e", "a/c", "ab"]:
            location.put(name, b"")
        assert list(location.keys("a/b")) == ["a/b/c", "a/bc", "a/bd/e"]
        assert list(location.keys("a/b/")) == ["a/b/c"]
        assert list(location.keys("a")) == ["a/b/c", "a/bc", "a/bd/e", "a/c", "ab"]
        assert list(location.keys("a/")) == ["a/b/c", "a/bc", "a/bd/e", "a/c"]
        assert list(location.keys("zzz")) == []
        assert list(location.keys("a/b/c/")) == []

    def test_glob_and_unicode_keys(self, location: Location) -> None:
        for name in GLOB_KEYS:
            assert location.put(name, name.encode())
        assert list(location.keys()) == sorted(GLOB_KEYS)
        for name in GLOB_KEYS:
            assert location.get(name) == name.encode()
            assert location.exists(name)
        # glob characters in a prefix are literal: "a*" is not "anything starting with a"
        assert list(location.keys("a*")) == ["a*b"]
        assert list(location.keys("[")) == ["[x]"]
        assert list(location.keys("q?")) == ["q?"]
        assert list(location.keys("star/")) == ["star/*"]
        assert location.delete("a*b")
        assert location.get("q?") == b"q?"

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys(self, location: Location, key: str) -> None:
        with pytest.raises(InvalidKeyError):
            location.write(key, b"x")
        with pytest.raises(InvalidKeyError):
            with location.read(key):
                pass
        with pytest.raises(InvalidKeyError):
            location.get(key)
        with pytest.raises(InvalidKeyError):
            location.delete(key)
        assert list(location.keys()) == []

    # -- views ------------------------------------------------------------------------------

    def test_sub(self, location: Location) -> None:
        ns = location.sub("run1")
        assert ns.put("a", b"1")
        assert ns.put("b/c", b"2")
        location.put("run10/x", b"other")
        assert location.get("run1/a") == b"1"
        assert list(ns.keys()) == ["a", "b/c"]
        assert list(ns.keys("b")) == ["b/c"]
        assert ns.get("b/c") == b"2"
        assert ns.delete("a") is True
        assert location.get("run1/a") is None
        assert ns.read_many(["b/c", "zz"]) == {"b/c": b"2", "zz": None}
        assert ns.write_many({"m": b"3", "n": io.BytesIO(b"4")}) == {"m": True, "n": True}
        assert location.get("run1/n") == b"4"

    def test_sub_nested(self, location: Location) -> None:
        nested = location.sub("a").sub("b")
        assert nested == location.sub("a/b")
        assert nested.put("c", b"1")
        assert location.get("a/b/c") == b"1"
        assert nested.url == location.sub("a/b").url
        assert nested.url != location.url
        with pytest.raises(InvalidKeyError):
            location.sub("../escape")

    def test_sub_url(self, location: Location) -> None:
        if not self._reopens(location):
            pytest.skip(f"{type(location).__name__} is not reopened by URL")
        from simrecorder.locations.registry import open_location

        ns = location.sub("ns/inner")
        ns.put("k", b"v")
        with open_location(ns.url) as again:
            assert again.get("k") == b"v"
            assert list(again.keys()) == ["k"]

    # -- batches ----------------------------------------------------------------------------

    def test_read_write_many(self, location: Location) -> None:
        items: dict[str, Any] = {
            "x/1": b"one",
            "x/2": bytearray(b"two"),
            "x/3": io.BytesIO(b"three"),
            "y": b"",
        }
        assert location.write_many(items) == dict.fromkeys(items, True)
        got = location.read_many(["y", "x/3", "x/1", "missing", "x/2"])
        assert got == {"y": b"", "x/3": b"three", "x/1": b"one", "missing": None, "x/2": b"two"}
        assert list(got) == ["y", "x/3", "x/1", "missing", "x/2"]
        assert location.read_many([]) == {}
        assert location.write_many({}) == {}

    def test_write_many_invalid_key_writes_nothing_new(self, location: Location) -> None:
        with pytest.raises(InvalidKeyError):
            location.write_many({"../bad": b"x"})
        assert list(location.keys()) == []

    # -- declining --------------------------------------------------------------------------

    def test_declined_write(self, location: Location) -> None:
        declining = self.declining_location(location)
        if declining is None:
            pytest.skip(f"{type(location).__name__} cannot be made to decline")
        stream = io.BytesIO(b"headerBODY" * 1000)
        stream.seek(6)
        assert declining.write("k", stream) is False
        assert stream.tell() == 6, "a declining location must leave the stream where it was"
        assert declining.write("k", b"bytes" * 20) is False
        batch: dict[str, Any] = {"k": b"1" * 100, "j": io.BytesIO(b"2" * 100)}
        assert declining.write_many(batch) == {"k": False, "j": False}
        assert declining.get("k") is None
        assert declining.get("j") is None

    # -- consumers --------------------------------------------------------------------------

    def test_consumer_exception_propagates(self, location: Location) -> None:
        location.put("k", b"value")
        error = _ConsumerError("from the consumer")
        with pytest.raises(_ConsumerError) as caught:
            with location.read("k") as stream:
                assert stream is not None
                stream.read(1)
                raise error
        assert caught.value is error
        with pytest.raises(_ConsumerError) as caught:
            with location.read("missing") as stream:
                assert stream is None
                raise error
        assert caught.value is error
        assert location.get("k") == b"value"  # the location still works

    # -- identity ---------------------------------------------------------------------------

    def test_pickle(self, location: Location) -> None:
        location.put("a/b", b"1")
        again = pickle.loads(pickle.dumps(location))
        try:
            assert again == location
            assert hash(again) == hash(location)
            assert again.url == location.url
            assert again.get("a/b") == b"1"
            assert list(again.keys()) == ["a/b"]
            sub = pickle.loads(pickle.dumps(location.sub("a")))
            assert sub == location.sub("a")
            assert sub.get("b") == b"1"
        finally:
            again.close()

    def test_url_reopens(self, location: Location) -> None:
        if not self._reopens(location):
            pytest.skip(f"{type(location).__name__} is not reopened by URL")
        from simrecorder.locations.registry import open_location

        location.put("k", b"v")
        with open_location(location.url) as again:
            assert again == location
            assert again.get("k") == b"v"

    def test_repr_names_url(self, location: Location) -> None:
        assert location.url.split("?")[0].split("://")[0] in repr(location)
        assert "://" in location.url

    def test_close_is_idempotent(self, location: Location) -> None:
        location.close()
        location.close()

    # -- processes --------------------------------------------------------------------------

    def test_four_processes_write_same_key(self, location: Location) -> None:
        context = self._processes(location)
        barrier = context.Barrier(4)
        size = 1 * MIB
        workers = [
            context.Process(
                target=_write_repeatedly, args=(location, "same", 65 + i, size, barrier)
            )
            for i in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
        value = location.get("same")
        assert value in {_value(65 + i, size) for i in range(4)}, "a mix of writers' values"
        assert list(location.keys()) == ["same"]

    def test_sigkill_mid_write_leaves_no_partial_value(self, location: Location) -> None:
        if not self.crash_safe_writes:
            pytest.skip(f"{type(self).__name__} does not declare crash_safe_writes")
        old = _value(ord("O"), 100 * KIB)
        assert location.put("big", old)
        context: Any = multiprocessing.get_context(self.mp_start_method)
        started = context.Event()
        child = context.Process(
            target=_write_slowly, args=(location, "big", self.crash_value_bytes, started)
        )
        child.start()
        try:
            assert started.wait(timeout=60), "the child never started writing"
            time.sleep(0.1)
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
        finally:
            if child.is_alive():
                child.kill()
        assert child.exitcode == -signal.SIGKILL
        assert location.get("big") == old
        assert list(location.keys()) == ["big"]
        assert location.put("big", b"after")  # the location is usable after the crash
        assert location.get("big") == b"after"

    # -- writer locks -----------------------------------------------------------------------

    def _locking(self, location: Location) -> None:
        if not location.supports_locking:
            pytest.skip(f"{type(location).__name__} has no writer locks")

    def test_lock_unsupported_raises(self, location: Location) -> None:
        if location.supports_locking:
            pytest.skip(f"{type(location).__name__} has writer locks")
        with pytest.raises(InvalidArgumentError, match="no writer locks"):
            location.lock()

    def test_lock_excludes_a_second_holder(self, location: Location) -> None:
        self._locking(location)
        with location.lock() as held:
            assert held.held
            held.check()
            with pytest.raises(StoreLockedError, match="writer"):
                location.lock()
            other = location.lock("other")  # another name is another lock
            other.release()
        assert not held.held
        with pytest.raises(StoreLockedError):
            held.check()  # released: no longer held
        location.lock().release()  # free again
        held.release()  # idempotent

    def test_lock_is_no_key(self, location: Location) -> None:
        self._locking(location)
        location.put("a/b", b"1")
        with location.lock(), location.lock("a/writer"):
            assert list(location.keys()) == ["a/b"]
            assert list(location.sub("a").keys()) == ["b"]
            assert location.put("c", b"2")  # a lock is no write barrier for its holder
        assert list(location.keys()) == ["a/b", "c"]

    def test_lock_of_a_view_is_the_parents(self, location: Location) -> None:
        self._locking(location)
        view = location.sub("run")
        assert view.supports_locking
        with view.lock():
            with pytest.raises(StoreLockedError):
                location.lock("run/writer")
            location.lock().release()  # the parent's own lock is another one
        with location.lock("run/writer"), pytest.raises(StoreLockedError):
            view.lock()

    def test_lock_timeout_waits(self, location: Location) -> None:
        self._locking(location)
        with location.lock():
            start = time.monotonic()
            with pytest.raises(StoreLockedError):
                location.lock(timeout=0.3)
            assert time.monotonic() - start >= 0.3
        location.lock(timeout=5).release()

    def test_lock_excludes_another_process(self, location: Location) -> None:
        self._locking(location)
        context = self._processes(location)
        result = context.Queue()
        with location.lock():
            child = context.Process(target=_try_lock, args=(location, "writer", result))
            child.start()
            child.join(timeout=60)
            assert child.exitcode == 0
            assert result.get(timeout=5).startswith("locked: ")
        child = context.Process(target=_try_lock, args=(location, "writer", result))
        child.start()
        child.join(timeout=60)
        assert result.get(timeout=5) == "taken"

    def test_lock_freed_when_its_holder_is_killed(self, location: Location) -> None:
        self._locking(location)
        context = self._processes(location)
        taken = context.Event()
        child = context.Process(target=_hold_lock, args=(location, "writer", taken))
        child.start()
        try:
            assert taken.wait(timeout=60), "the child never took the lock"
            with pytest.raises(StoreLockedError):
                location.lock()
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
        finally:
            if child.is_alive():
                child.kill()
        start = time.monotonic()
        location.lock(timeout=self.lock_expiry_seconds + 10).release()
        assert time.monotonic() - start <= self.lock_expiry_seconds + 2

    # -- helpers ----------------------------------------------------------------------------

    def _processes(self, location: Location) -> Any:
        """The multiprocessing context of the tests with child processes (skipped for
        locations that processes do not share)."""
        shared = self.shared_between_processes
        if not (location.persistent if shared is None else shared):
            pytest.skip(f"{type(location).__name__} is not shared between processes")
        return multiprocessing.get_context(self.mp_start_method)

    def _reopens(self, location: Location) -> bool:
        return location.persistent if self.reopens_by_url is None else self.reopens_by_url

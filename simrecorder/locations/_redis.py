"""A location in a Redis database: one Redis string per key."""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import IO, Any, ClassVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from .._fs import TEMP_PREFIX
from .._redis_client import (
    REDIS_ERRORS,
    client_defaults,
    client_from_url,
    parse_redis_url,
    redact,
    translate,
)
from ..errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidKeyError,
    SimRecorderError,
    StoreFullError,
    StoreLockedError,
    ValueChangedError,
)
from .base import (
    COPY_CHUNK_BYTES,
    Data,
    Location,
    LocationLock,
    acquire_within,
    bytes_stream,
    check_data,
    check_location_key,
    is_lock_name,
    lock_key,
    rewind,
    stream_position,
)

__all__ = ["LOCK_TTL_SECONDS", "MAX_REDIS_STRING", "RedisLocation", "ValueChangedError"]

#: Redis' largest string (``proto-max-bulk-len``, 512 MiB by default).
MAX_REDIS_STRING = 512 * 1024 * 1024

#: A partly sent stream lives this long under its temp key if its writer dies.
TEMP_TTL_SECONDS = 3600

_GLOB = re.compile(r"([*?\[\]\\])")

#: Default lease of a lock (:meth:`RedisLocation.lock`): a holder that stops renewing
#: it (killed, or stalled this long) loses it after this many seconds.
LOCK_TTL_SECONDS = 30.0

# KEYS: lock;  ARGV: token, ttl in ms.  Renew the lease if this holder still has it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lock;  ARGV: token.  Delete the lock if this holder still has it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: temp, final (one slot).  Move a streamed value into place, without its expiry.
_RENAME = """
redis.call('RENAME', KEYS[1], KEYS[2])
return redis.call('PERSIST', KEYS[2])
"""

# KEYS: value;  ARGV: last byte wanted.  The value's first bytes, nil when it is absent
# (GETRANGE alone answers '' for both an absent and an empty value).
_FIRST_PIECE = """
local piece = redis.call('GETRANGE', KEYS[1], 0, ARGV[1])
if piece == '' and redis.call('EXISTS', KEYS[1]) == 0 then return false end
return piece
"""
_FIRST_PIECE_SHA = hashlib.sha1(_FIRST_PIECE.encode()).hexdigest()


class RedisLocation(Location):
    """Values as Redis strings: key ``a/b`` is the Redis key ``<prefix>/a/b`` (on a
    Redis Cluster ``{<prefix>/a/b}``, see the notes).

    Parameters
    ----------
    url_or_client
        ``redis://[user[:password]@]host[:port]/db[/prefix]`` (``rediss://`` for TLS,
        ``unix:///path/to/socket[/prefix]?db=N``), ``redis+cluster://host:port[/prefix]``
        (``rediss+cluster://``; any node of a Redis Cluster), or a ``redis.Redis`` or
        ``redis.cluster.RedisCluster`` client (shared, not closed by :meth:`close`). URLs
        go through simrecorder's one Redis client factory: 5 s connect timeout, 60 s
        socket timeout, three retries with backoff.
    prefix
        Namespace of this location's keys (appended to the URL's); ``""`` (default
        without one in the URL) makes every key of the database a key of the location.
    max_value_bytes
        Larger values are declined (at most 512 MiB, Redis' string limit).
    read_only
        Decline every write; :meth:`delete` raises :class:`ReadOnlyError`.
    lock_ttl
        Seconds a :meth:`lock` lease lasts without renewal (default
        :data:`LOCK_TTL_SECONDS`; ``?lock_ttl=`` in the URL).
    **options
        redis-py client options (``password``, ``socket_timeout``...), overriding the URL.

    Notes
    -----
    - A full Redis (``maxmemory`` with ``noeviction``, or a ``MISCONF`` failing save)
      makes writes *decline* (``False``, streams rewound), so a
      :class:`~simrecorder.locations.Fanout` spills to its next location. A server
      that cannot be reached raises :class:`StoreConnectionError` (after the
      factory's timeouts and retries); other error replies raise the errors of
      :func:`~simrecorder.datastores._redis_client.translate`.
    - ``write`` of a stream longer than 1 MiB sends it in 1 MiB pieces to a temp key
      (``.simrecorder-tmp-*``, expiring after an hour) and renames it into place in
      one ``MULTI``/``EXEC``: memory stays bounded and readers never see a part.
      :meth:`write_many` sends all values in one ``MULTI``/``EXEC`` (all land or
      none; streams are read whole first). :meth:`read_many` is one ``MGET``.
    - :meth:`read` fetches a value of up to 1 MiB at once (one Lua script: ``GETRANGE``,
      and ``EXISTS`` when empty; :meth:`get` stays one ``GET``). A longer value is streamed in
      1 MiB pieces (``GETRANGE``) on a connection of its own that ``WATCH``es the key;
      each piece comes with ``CLIENT INFO`` in the same round trip, and its flag ``d``
      (a watched key was modified) makes the stream raise :class:`ValueChangedError`
      instead of handing out a piece of another value: a reader gets one value
      whole, or that error once the value was replaced or deleted mid-read (memory
      stays at about one piece; Redis 6.2 or later, for ``CLIENT INFO``).
    - :meth:`keys` uses ``SCAN`` (never ``KEYS``) with glob characters escaped;
      Redis keys that are no valid location key (another program's) are skipped.
    - The password is left out of :attr:`url`; pickling keeps it.
    - :meth:`lock` is a lease: the Redis key ``<prefix>/.simrecorder-lock-<name>``
      set with ``SET NX PX`` to a token of its holder, renewed by a daemon thread
      every third of ``lock_ttl`` (default :data:`LOCK_TTL_SECONDS`, 30 s) and deleted on
      release only if it still holds that token (one Lua script). A killed holder's
      lock expires ``lock_ttl`` seconds after its last renewal; a holder stalled longer
      than that (the whole process stopped, or the server away) loses the lock to
      the next writer, and its :meth:`LocationLock.check` raises from then on.
    - On a Redis Cluster every Redis key is a hash tag of its own: key ``a/b`` is
      ``{<prefix>/a/b}``, a streamed value's temp key is ``.simrecorder-tmp-<hex>{<prefix>/a/b}``
      (same slot: one Lua script renames it into place and drops its expiry) and the lock is
      ``{<prefix>/.simrecorder-lock-<name>}`` (its Lua scripts run on its slot). Keys
      spread over the slots, so :meth:`read_many`, :meth:`write_many` and
      :meth:`delete_many` are pipelines grouped by node (one round trip per node), not
      transactions: :attr:`supports_atomic_batch` is ``False`` on a cluster (a failing
      node can leave part of a batch written). :meth:`keys` scans every primary.
    """

    protocol: ClassVar[str] = "redis"
    persistent: ClassVar[bool] = True
    supports_atomic_batch: ClassVar[bool] = True
    supports_locking = True

    def __init__(
        self,
        url_or_client: str | Any = "redis://localhost:6379/0",
        prefix: str = "",
        max_value_bytes: int | None = None,
        read_only: bool | None = None,
        lock_ttl: float | None = None,
        **options: Any,
    ) -> None:
        self._options = dict(options)
        own: dict[str, Any] = {}
        if isinstance(url_or_client, str):
            endpoint, url_prefix, own, self._client = _client_for(url_or_client, options)
            self._owns_client = True
        elif isinstance(url_or_client, (redis.Redis, RedisCluster)):
            endpoint, url_prefix, self._client = _endpoint_of(url_or_client), "", url_or_client
            self._owns_client = False
        else:
            raise ArgumentTypeError(
                "RedisLocation takes a redis://, redis+cluster:// or unix:// URL, or a "
                f"redis.Redis or redis.cluster.RedisCluster client; got "
                f"{type(url_or_client).__name__}"
            )
        self._endpoint = endpoint
        #: On a Redis Cluster (hash-tagged keys, batches that are no transactions).
        self.cluster = isinstance(self._client, RedisCluster)
        if self.cluster:
            self.supports_atomic_batch = False  # type: ignore[misc]
        if max_value_bytes is None:
            max_value_bytes = own.get("max_value_bytes", MAX_REDIS_STRING)
        if not isinstance(max_value_bytes, int) or not 0 <= max_value_bytes <= MAX_REDIS_STRING:
            raise InvalidArgumentError(
                f"max_value_bytes must be from 0 to {MAX_REDIS_STRING} (512 MiB); "
                f"got {max_value_bytes!r}"
            )
        self.max_value_bytes = max_value_bytes
        self._limit = max_value_bytes
        self.read_only = bool(own.get("read_only", False) if read_only is None else read_only)
        self.lock_ttl = _check_ttl(own.get("lock_ttl", LOCK_TTL_SECONDS) if lock_ttl is None
                                   else lock_ttl)  # fmt: skip
        self.prefix = _join_prefix(url_prefix, prefix)
        self._namespace = f"{self.prefix}/" if self.prefix else ""

    # -- identity ---------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisLocation:
        """Open ``redis://host:port/db/prefix`` (see the class); ``options`` override."""
        return cls(url, **options)

    @property
    def url(self) -> str:
        """``redis://host:port/db/prefix`` (or ``unix:///socket/prefix?db=N``,
        ``redis+cluster://host:port/prefix``), no password."""
        prefix = "/" + quote(self.prefix) if self.prefix else ""
        if self.cluster and self.prefix.split("/", 1)[0].isdigit():
            prefix = "/0" + prefix  # a first part of digits would be read as the db
        own = {}
        if self.read_only:
            own["read_only"] = "1"
        if self._limit != MAX_REDIS_STRING:
            own["max_value_bytes"] = str(self._limit)
        if self.lock_ttl != LOCK_TTL_SECONDS:
            own["lock_ttl"] = f"{self.lock_ttl:g}"
        return _endpoint_url(self._endpoint, prefix, urlencode(own))

    @property
    def _where(self) -> str:
        return redact(self.url)

    def __reduce__(self) -> tuple[Any, ...]:
        client = self._client
        pool_kwargs = (client.nodes_manager.connection_kwargs if self.cluster
                       else client.connection_pool.connection_kwargs)  # fmt: skip
        kwargs = dict(pool_kwargs)
        settings = {name: kwargs[name] for name in ("password", "username") if kwargs.get(name)}
        settings.update(self._options)
        url = _endpoint_url(self._endpoint)
        return (
            _restore,
            (url, self.prefix, self.max_value_bytes, self.read_only, settings, self.lock_ttl),
        )

    def close(self) -> None:
        """Close the connections of a client this location made (a given one stays open)."""
        if self._owns_client:
            self._client.close()

    # -- primitives -------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_location_key(key)
        if key.split("/", 1)[0].startswith(TEMP_PREFIX) and not self._namespace:
            raise InvalidKeyError(
                f"invalid key {key!r} for {self!r}: keys starting with {TEMP_PREFIX!r} "
                "are the temp keys of unfinished writes"
            )
        if any(is_lock_name(part) for part in key.split("/")):
            raise InvalidKeyError(
                f"invalid key {key!r} for {self!r}: a part starting with "
                "'.simrecorder-lock-' is the name of a lock"
            )
        return self._redis_name(self._namespace + key)

    def _redis_name(self, name: str) -> str:
        """The Redis key of ``<prefix>/<key>``: itself, or its own hash tag on a cluster."""
        return f"{{{name}}}" if self.cluster else name

    def _temp_name(self, name: str) -> str:
        """A fresh temp key for a value streamed to the Redis key ``name``: on a
        cluster in the slot of ``name`` (so that it can be renamed into place)."""
        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        if not self.cluster:
            return temp
        if not name.startswith("{}"):
            return temp + name  # the same hash tag: ``{<prefix>/<key>`` up to its first ``}``
        return f"{temp}{{{_tag_of_slot(key_slot(name.encode()))}}}"  # an empty tag: no tag

    # -- locks ------------------------------------------------------------------------------

    def lock(self, name: str = "writer", timeout: float | None = 0) -> LocationLock:
        """See :meth:`Location.lock`: a lease of :attr:`lock_ttl` seconds, renewed in
        the background while held (see the class notes).

        Raises
        ------
        StoreLockedError
            Another writer holds it (in this process or another).
        StoreConnectionError
            The server cannot be reached.
        """
        redis_key = self._redis_name(self._namespace + lock_key(name))
        return acquire_within(lambda: self._take(name, redis_key, self.lock_ttl), timeout)

    def _take(self, name: str, redis_key: str, ttl: float) -> LocationLock:
        token = f"{os.getpid()}-{secrets.token_hex(16)}"
        with self._translated():
            taken = self._client.set(redis_key, token, nx=True, px=max(1, int(ttl * 1000)))
        if not taken:
            raise StoreLockedError(
                f"{self._where}: the lock {name!r} (Redis key {redis_key!r}) is held by "
                f"another writer; a killed holder's lock expires {ttl:g} s after its last "
                "renewal"
            )
        return _RedisLock(self, name, redis_key, token, ttl)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except REDIS_ERRORS as exc:
            raise translate(exc, self._where) from exc

    def read(self, key: str) -> AbstractContextManager[IO[bytes] | None]:
        """See :meth:`Location.read`: a value of up to 1 MiB comes in one round trip; a
        longer one is streamed in 1 MiB pieces (see the class notes).

        Raises
        ------
        ValueChangedError
            (While the stream is read) the value was replaced or deleted after its
            first piece was handed out.
        """
        name = self._key(key)
        with self._translated():
            found = self._first_piece(name)
        if found is None or len(found) <= COPY_CHUNK_BYTES:
            return bytes_stream(found)  # the whole value (or None)
        return self._streamed(key, name)

    def _first_piece(self, name: str) -> bytes | None:
        """The first 1 MiB + 1 byte of the value under ``name`` (``None`` if absent):
        all of it when it is no longer (one Lua script, one round trip)."""
        try:
            found: bytes | None = self._client.evalsha(_FIRST_PIECE_SHA, 1, name, COPY_CHUNK_BYTES)
        except redis.exceptions.NoScriptError:  # EVAL caches it for the next time
            found = self._client.eval(_FIRST_PIECE, 1, name, COPY_CHUNK_BYTES)
        return found

    @contextmanager
    def _streamed(self, key: str, name: str) -> Iterator[IO[bytes] | None]:
        """A value longer than one piece, as a :class:`_PieceStream` on a connection
        of its own that ``WATCH``es the key."""
        with self._translated():
            stream = _PieceStream(self, key, name)
            stream.start()
        with stream:
            if stream.size is None:  # deleted since the first look
                yield None
            else:
                yield cast(IO[bytes], stream)

    def _pool_of(self, name: str) -> Any:
        """The connection pool of the server holding the Redis key ``name``."""
        if self.cluster:
            return self._client.get_node_from_key(name).redis_connection.connection_pool
        return self._client.connection_pool

    def get(self, key: str) -> bytes | None:
        """See :meth:`Location.get`."""
        name = self._key(key)
        with self._translated():
            value: bytes | None = self._client.get(name)
        return value

    def exists(self, key: str) -> bool:
        """See :meth:`Location.exists`."""
        name = self._key(key)
        with self._translated():
            return bool(self._client.exists(name))

    def write(self, key: str, data: Data) -> bool:
        """See :meth:`Location.write`."""
        name = self._key(key)
        check_data(self, key, data)
        if self.read_only:
            return False
        if isinstance(data, (bytes, bytearray, memoryview)):
            if memoryview(data).nbytes > self._limit:
                return False
            return self._declines_when_full(lambda: self._set(name, data), data, None)
        position = stream_position(data)
        if position is not None and _remaining(data, position) > self._limit:
            return False
        first = _read_up_to(data, COPY_CHUNK_BYTES)
        if len(first) < COPY_CHUNK_BYTES:  # the whole stream: one SET
            return self._declines_when_full(lambda: self._set(name, first), data, position)
        return self._declines_when_full(
            lambda: self._send_pieces(name, first, data), data, position
        )

    def _set(self, name: str, value: bytes | bytearray | memoryview) -> bool:
        self._client.set(name, bytes(value) if isinstance(value, memoryview) else value)
        return True

    def _send_pieces(self, name: str, first: bytes, stream: IO[bytes]) -> bool:
        """Send a long stream in pieces to a temp key, then rename it into place."""
        temp = self._temp_name(name)
        size = len(first)
        try:
            self._client.set(temp, first, ex=TEMP_TTL_SECONDS)
            while piece := stream.read(COPY_CHUNK_BYTES):
                size += len(piece)
                if size > self._limit:
                    return False
                pipe = self._client.pipeline(transaction=False)
                pipe.append(temp, piece)
                pipe.expire(temp, TEMP_TTL_SECONDS)
                pipe.execute()
            self._rename_into_place(temp, name)
            temp = ""
            return True
        finally:
            if temp:
                self._forget(temp)

    def _rename_into_place(self, temp: str, name: str) -> None:
        """``RENAME`` + ``PERSIST`` at once: a ``MULTI``/``EXEC``, or on a cluster (whose
        client pipelines refuse ``RENAME``) one Lua script on the keys' shared slot."""
        if self.cluster:
            self._client.eval(_RENAME, 2, temp, name)
            return
        pipe = self._client.pipeline(transaction=True)
        pipe.rename(temp, name)
        pipe.persist(name)
        pipe.execute()

    def _forget(self, temp: str) -> None:
        try:
            self._client.delete(temp)
        except REDIS_ERRORS:
            pass  # it expires by itself

    def _declines_when_full(self, send: Any, data: Data, position: int | None) -> bool:
        """Run ``send``; a full Redis or an over-long stream declines (stream rewound)."""
        try:
            with self._translated():
                stored: bool = send()
        except StoreFullError:
            stored = False
        if not stored and position is not None:
            rewind(data, position)  # type: ignore[arg-type]
        return stored

    def delete(self, key: str) -> bool:
        """See :meth:`Location.delete`."""
        name = self._key(key)
        self._refuse_read_only(key)
        with self._translated():
            return bool(self._client.delete(name))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`Location.keys` (``SCAN MATCH``, glob characters escaped; on a
        cluster every primary is scanned)."""
        start = self._namespace + prefix
        pattern = _GLOB.sub(r"\\\1", start) + "*"
        if self.cluster:
            pattern = f"{{{pattern}}}"
        cut = len(self._namespace)
        found = []
        with self._translated():
            for raw in self._client.scan_iter(match=pattern, count=1000):
                if self.cluster:
                    raw = raw[1:-1]  # the pattern matched ``{...}``
                key = _as_key(raw, cut)
                if key is not None and key.startswith(prefix):
                    found.append(key)
        yield from sorted(found)

    # -- batches ----------------------------------------------------------------------------

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """See :meth:`Location.read_many` (one ``MGET``; on a cluster one ``MGET``
        per slot, pipelined: one round trip per node)."""
        keys = list(keys)
        if not keys:
            return {}
        names = [self._key(key) for key in keys]
        with self._translated():
            if self.cluster:  # an MGET per slot, pipelined: one round trip per node
                values = self._client.mget_nonatomic(names)
            else:
                values = self._client.mget(names)
        return dict(zip(keys, values, strict=True))

    def write_many(self, items: Mapping[str, Data]) -> dict[str, bool]:
        """See :meth:`Location.write_many` (one ``MULTI``/``EXEC``: all or none; on a
        cluster a pipeline with one round trip per node, not atomic)."""
        names = {key: self._key(key) for key in items}
        for key, data in items.items():
            check_data(self, key, data)
        stored = dict.fromkeys(items, False)
        if self.read_only or not items:
            return stored
        positions = {key: _position(data) for key, data in items.items()}
        values = {}
        for key, data in items.items():
            value = _read_limited(data, self._limit)
            if value is None:
                _rewind_if(data, positions[key])
                continue
            values[key] = value
        try:
            with self._translated():
                pipe = self._client.pipeline(transaction=not self.cluster)
                for key, value in values.items():
                    pipe.set(names[key], value)
                pipe.execute()
        except StoreFullError:
            for key, data in items.items():
                _rewind_if(data, positions[key])
            return stored
        stored.update(dict.fromkeys(values, True))
        return stored

    def delete_many(self, keys: Iterable[str]) -> int:
        """See :meth:`Location.delete_many` (one round trip)."""
        names = [self._key(key) for key in keys]
        if not names:
            return 0
        if self.read_only:
            self._refuse_read_only(names[0])
        with self._translated():
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.delete(name)
            return sum(pipe.execute())


def _restore(
    url: str,
    prefix: str,
    max_value_bytes: int,
    read_only: bool,
    options: dict[str, Any],
    lock_ttl: float = LOCK_TTL_SECONDS,
) -> RedisLocation:
    return RedisLocation(url, prefix, max_value_bytes, read_only, lock_ttl, **options)


def _check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise InvalidArgumentError(f"a Redis lock_ttl is a number of seconds > 0; got {ttl!r}")
    return float(ttl)


def _join_prefix(first: str, second: str) -> str:
    prefix = "/".join(part.strip("/") for part in (first, second) if part.strip("/"))
    if prefix:
        check_location_key(prefix)
    return prefix


def _tag_of_slot(slot: int) -> str:
    """A short hash tag in cluster slot ``slot`` (for the temp key of a Redis key
    without a tag of its own)."""
    number = 0
    while key_slot(str(number).encode()) != slot:
        number += 1
    return str(number)


def _as_key(raw: bytes, cut: int) -> str | None:
    """A Redis key name as a location key, or ``None`` when it is none of ours."""
    try:
        key = raw.decode("utf-8")[cut:]
        check_location_key(key)
    except (UnicodeDecodeError, InvalidKeyError):
        return None
    if key.split("/", 1)[0].startswith(TEMP_PREFIX):
        return None
    if any(is_lock_name(part) for part in key.split("/")):
        return None
    return key


class _RedisLock(LocationLock):
    """A lease on a Redis key (see :meth:`RedisLocation.lock`), renewed by a daemon
    thread every ``ttl / 3`` seconds until released or lost."""

    location: RedisLocation

    def __init__(
        self, location: RedisLocation, name: str, redis_key: str, token: str, ttl: float
    ) -> None:
        super().__init__(location, name)
        self.redis_key = redis_key
        self.ttl = ttl
        self._token = token
        self._renewed = time.monotonic()  # when the lease last started (or was renewed)
        self._lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._keep, name=f"simrecorder-lock-{redis_key}", daemon=True
        )
        self._thread.start()

    def _keep(self) -> None:
        """Renew the lease every third of its ttl until released or lost."""
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except SimRecorderError:
                continue  # the server is away: try again (the lease may run out)
            if self._lost:
                return

    def renew(self) -> bool:
        """Renew the lease now; return whether this holder still has it."""
        if self._lost or not self.held:
            return False
        started = time.monotonic()
        with self.location._translated():
            kept = self.location._client.eval(
                _RENEW, 1, self.redis_key, self._token, max(1, int(self.ttl * 1000))
            )
        if kept:
            self._renewed = started
        else:
            self._lost = True
        return bool(kept)

    def check(self) -> None:
        """Raise :class:`StoreLockedError` when the lease was lost (it ran out while
        this holder stalled, and another writer may have taken it). A lease the
        thread has not renewed for half its ttl is renewed here first."""
        super().check()
        if not self._lost and time.monotonic() - self._renewed > self.ttl / 2:
            self.renew()
        if self._lost:
            raise StoreLockedError(
                f"{self.location._where}: this writer lost the lock {self.name!r} (Redis key "
                f"{self.redis_key!r}): it was not renewed within its ttl of {self.ttl:g} s, "
                "so another writer may hold it now"
            )

    def _release(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        with self.location._translated():
            self.location._client.eval(_RELEASE, 1, self.redis_key, self._token)


#: Attempts at a consistent first piece of a streamed value before giving up.
_START_ATTEMPTS = 5


class _PieceStream(io.RawIOBase):
    """A Redis string read in pieces of :data:`COPY_CHUNK_BYTES` (``GETRANGE``) on a
    connection of its own that ``WATCH``es the key.

    Each piece is fetched together with ``CLIENT INFO`` (one round trip), whose flag
    ``d`` says that a watched key was modified since ``WATCH``; a piece is handed out
    only when it is clear, so a reader gets one value whole, or
    :class:`ValueChangedError` once the value was replaced (``SET``, ``RENAME`` of a
    streamed write) or deleted. The stream can seek (pieces are fetched again, still
    watched). The connection goes back to its pool (after ``UNWATCH``) when the
    stream is closed.
    """

    def __init__(self, location: RedisLocation, key: str, name: str) -> None:
        super().__init__()
        self._location = location
        self._key = key
        self._name = name
        self._pool = location._pool_of(name)
        self._conn: Any = None
        #: The length of the value, ``None`` when it is absent.
        self.size: int | None = None
        self._piece = b""
        self._offset = 0  # into ``_piece``
        self._next = 0  # where the next piece starts in the value

    def start(self) -> None:
        """Take a connection, ``WATCH`` the key and read its length and first piece."""
        try:
            self._conn = self._pool.get_connection()
        except REDIS_ERRORS as exc:
            raise translate(exc, self._location._where) from exc
        name = self._name
        for _ in range(_START_ATTEMPTS):
            _, _, exists, size, piece, info = self._ask(
                ("UNWATCH",), ("WATCH", name), ("EXISTS", name), ("STRLEN", name),
                ("GETRANGE", name, 0, COPY_CHUNK_BYTES - 1), ("CLIENT", "INFO"),
            )  # fmt: skip
            if not _dirty(info):
                break
        else:
            self._finish()
            raise ValueChangedError(
                f"{self._location._where}: the value of {self._key!r} was replaced "
                f"{_START_ATTEMPTS} times while its first piece was read"
            )
        if not exists:
            self._finish()
            return
        self.size, self._piece, self._next = int(size), piece, len(piece)

    def readable(self) -> bool:
        """A stream to read."""
        return True

    def seekable(self) -> bool:
        """Seeking works (pieces are fetched again, from the same watched value)."""
        return True

    def tell(self) -> int:
        """The position in the value."""
        self._checkClosed()
        return self._next - len(self._piece) + self._offset

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to ``offset`` (from the start, the position or the end)."""
        self._checkClosed()
        bases = {os.SEEK_SET: 0, os.SEEK_CUR: self.tell(), os.SEEK_END: self.size or 0}
        if whence not in bases:
            raise InvalidArgumentError(
                f"cannot seek in {self._key!r} of {self._location._where}: whence is "
                f"0, 1 or 2, got {whence!r}"
            )
        target = max(0, bases[whence] + offset)
        start = self._next - len(self._piece)
        if start <= target <= self._next:
            self._offset = target - start
        else:
            self._piece, self._offset, self._next = b"", 0, target
        return target

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes (fewer at the end; all the rest for ``-1``), like a file."""
        self._checkClosed()
        if size is None or size < 0:
            return self.readall()
        first = self._take(size)
        if len(first) == size or not first:
            return first
        parts = [first]
        left = size - len(first)
        while left and (part := self._take(left)):
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    def readall(self) -> bytes:
        """All the rest of the value."""
        parts = []
        while part := self._take(COPY_CHUNK_BYTES):
            parts.append(part)
        return b"".join(parts)

    def _take(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current piece (the next one when it is used up)."""
        if size == 0 or (self._offset >= len(self._piece) and not self._fetch()):
            return b""
        start = self._offset
        self._offset = end = min(start + size, len(self._piece))
        if start == 0 and end == len(self._piece):
            return self._piece  # a whole piece: no copy
        return self._piece[start:end]

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer``; return the number of bytes read."""
        target = memoryview(buffer).cast("B")
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Give the connection back (``UNWATCH`` first)."""
        self._finish()
        super().close()

    def _fetch(self) -> bool:
        """Fetch the next piece; ``False`` at the end of the value."""
        if self.size is None or self._next >= self.size:
            return False
        last = min(self._next + COPY_CHUNK_BYTES, self.size) - 1
        if self._conn is None:
            raise ValueChangedError(
                f"{self._location._where}: cannot go on reading {self._key!r}: an "
                "earlier read of this stream failed; read the key again"
            )
        piece, info = self._ask(("GETRANGE", self._name, self._next, last), ("CLIENT", "INFO"))
        if _dirty(info) or len(piece) != last + 1 - self._next:
            self._finish()
            raise ValueChangedError(
                f"{self._location._where}: the value of {self._key!r} was replaced or "
                f"deleted while it was read (after {self._next} of {self.size} bytes); "
                "read it again"
            )
        self._piece, self._offset, self._next = piece, 0, last + 1
        return True

    def _ask(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` at once; return their replies (one round trip)."""
        conn = self._conn
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            return [conn.read_response() for _ in commands]
        except REDIS_ERRORS as exc:
            self._drop()
            raise translate(exc, self._location._where) from exc
        except BaseException:
            self._drop()  # interrupted: replies left unread
            raise

    def _finish(self) -> None:
        """``UNWATCH`` and give the connection back to its pool."""
        if self._conn is None:
            return
        try:
            self._ask(("UNWATCH",))
        except SimRecorderError:
            return  # dropped: the connection was closed
        self._pool.release(self._conn)
        self._conn = None

    def _drop(self) -> None:
        """Close the connection (unread replies, an open ``WATCH``) and give it back."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)


def _dirty(info: bytes | str) -> bool:
    """Whether a ``CLIENT INFO`` reply has the flag ``d``: a watched key was modified."""
    text = info.decode() if isinstance(info, bytes) else info
    for field in text.split():
        if field.startswith("flags="):
            return "d" in field[6:]
    return True  # no flags: assume the worst


def _position(data: Data) -> int | None:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return None
    return stream_position(data)


def _rewind_if(data: Data, position: int | None) -> None:
    if position is not None:
        rewind(data, position)  # type: ignore[arg-type]


def _remaining(stream: IO[bytes], position: int) -> int:
    try:
        end = stream.seek(0, os.SEEK_END)
    finally:
        stream.seek(position)
    return end - position


def _read_limited(data: Data, limit: int) -> bytes | None:
    """``data`` as bytes, or ``None`` when it is longer than ``limit``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        value = bytes(data)
        return value if len(value) <= limit else None
    value = _read_up_to(data, limit + 1)
    return value if len(value) <= limit else None


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    """Read ``size`` bytes, or up to the end (a pipe returns short reads before it)."""
    pieces = []
    left = size
    while left > 0:
        piece = stream.read(min(left, COPY_CHUNK_BYTES))
        if not piece:
            break
        if not isinstance(piece, (bytes, bytearray)):
            raise ArgumentTypeError(
                f"a location stores binary streams, got a stream yielding {type(piece).__name__}"
            )
        pieces.append(piece)
        left -= len(piece)
    return b"".join(pieces)


# -- URLs and clients -------------------------------------------------------------------------

_Endpoint = tuple[str, str, str, str]  # scheme, netloc (no password), path, query


def _endpoint_url(endpoint: _Endpoint, prefix: str = "", own: str = "") -> str:
    """``scheme://netloc/path[/prefix][?query]`` (``urlunsplit`` drops the ``//`` of
    ``unix://`` URLs, which have no host)."""
    scheme, netloc, path, query = endpoint
    query = "&".join(part for part in (query, own) if part)
    return f"{scheme}://{netloc}{path}{prefix}" + (f"?{query}" if query else "")


def _client_for(url: str, options: dict[str, Any]) -> tuple[_Endpoint, str, dict[str, Any], Any]:
    """The endpoint, the prefix in the URL, the location's own options in the URL
    (``read_only``, ``max_value_bytes``) and a client for ``url``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    rest = dict(parse_qsl(parts.query, keep_blank_values=True))
    query_prefix = rest.pop("prefix", "")
    if "mode" in rest:
        raise InvalidArgumentError(f"a Redis location takes no mode= option: {redact(url)!r}")
    own = _own_options(rest, url)
    query = urlencode(rest)
    if scheme == "unix":
        socket, path_prefix = _split_socket_path(unquote(parts.path))
        found = redis.connection.parse_url(f"unix://{quote(socket)}?{query}")
        settings = client_defaults()
        settings.update({k: v for k, v in found.items() if k not in ("path", "connection_class")})
        settings.update(options)
        try:
            client = redis.Redis(unix_socket_path=socket, **settings)
        except TypeError as exc:
            raise InvalidArgumentError(f"bad option for {redact(url)!r}: {exc}") from None
        endpoint = ("unix", "", quote(socket), query)
    elif scheme in ("redis", "rediss"):
        pieces = [unquote(part) for part in parts.path.split("/") if part]
        db = pieces.pop(0) if pieces and pieces[0].isdigit() else "0"
        path_prefix = "/".join(pieces)
        base = urlunsplit((scheme, parts.netloc, f"/{db}", query, ""))
        parsed = parse_redis_url(base)
        client = client_from_url(base, **options)
        user = f"{quote(parsed.username)}@" if parsed.username else ""
        endpoint = (scheme, f"{user}{parsed.host}:{parsed.port}", f"/{parsed.db}", query)
    elif scheme in ("redis+cluster", "rediss+cluster"):
        pieces = [unquote(part) for part in parts.path.split("/") if part]
        db = pieces.pop(0) if pieces and pieces[0].isdigit() else "0"  # only 0 is accepted
        path_prefix = "/".join(pieces)
        base = urlunsplit((scheme, parts.netloc, f"/{db}", query, ""))
        parsed = parse_redis_url(base)
        client = client_from_url(base, **options)
        user = f"{quote(parsed.username)}@" if parsed.username else ""
        endpoint = (scheme, f"{user}{parsed.host}:{parsed.port}", "", query)
    else:
        raise InvalidArgumentError(
            "RedisLocation takes redis://, rediss://, redis+cluster://, rediss+cluster:// "
            f"or unix:// URLs; got {redact(url)!r}"
        )
    return endpoint, _join_prefix(path_prefix, query_prefix), own, client


def _own_options(query: dict[str, str], url: str) -> dict[str, Any]:
    """Take ``read_only``, ``max_value_bytes`` and ``lock_ttl`` out of a URL's query."""
    own: dict[str, Any] = {}
    if "read_only" in query:
        text = query.pop("read_only").lower()
        if text not in ("1", "0", "true", "false", "yes", "no"):
            raise InvalidArgumentError(f"bad read_only={text!r} in {redact(url)!r}: use 1 or 0")
        own["read_only"] = text in ("1", "true", "yes")
    if "max_value_bytes" in query:
        text = query.pop("max_value_bytes")
        if not text.isdigit():
            raise InvalidArgumentError(
                f"bad max_value_bytes={text!r} in {redact(url)!r}: a number of bytes"
            )
        own["max_value_bytes"] = int(text)
    if "lock_ttl" in query:
        text = query.pop("lock_ttl")
        try:
            own["lock_ttl"] = float(text)
        except ValueError:
            raise InvalidArgumentError(
                f"bad lock_ttl={text!r} in {redact(url)!r}: a number of seconds"
            ) from None
    return own


def _split_socket_path(path: str) -> tuple[str, str]:
    """Split ``/run/redis.sock/a/b`` into the socket and the prefix ``a/b``."""
    parts = path.split("/")
    for end in range(len(parts), 1, -1):
        candidate = "/".join(parts[:end])
        try:
            if stat.S_ISSOCK(os.stat(candidate).st_mode):
                return candidate, "/".join(parts[end:])
        except OSError:
            continue
    return path, ""


def _endpoint_of(client: Any) -> _Endpoint:
    """The endpoint a ``redis.Redis`` (or ``RedisCluster``: its first startup node)
    client talks to."""
    if isinstance(client, RedisCluster):
        return _cluster_endpoint_of(client)
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return ("unix", "", quote(kwargs["path"]), urlencode({"db": db}))
    scheme = "rediss" if client.connection_pool.connection_class is redis.SSLConnection else "redis"
    user = f"{quote(kwargs['username'])}@" if kwargs.get("username") else ""
    return (scheme, f"{user}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}",
            f"/{db}", "")  # fmt: skip


def _cluster_endpoint_of(client: RedisCluster) -> _Endpoint:
    """The endpoint of a ``RedisCluster`` client: the first node it started from."""
    kwargs = client.nodes_manager.connection_kwargs
    nodes = list(client.nodes_manager.startup_nodes.values()) or [client.get_default_node()]
    ssl = kwargs.get("connection_class") is redis.SSLConnection or bool(kwargs.get("ssl"))
    scheme = "rediss+cluster" if ssl else "redis+cluster"
    user = f"{quote(kwargs['username'])}@" if kwargs.get("username") else ""
    return (scheme, f"{user}{nodes[0].host}:{nodes[0].port}", "", "")

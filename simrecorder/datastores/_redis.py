"""Redis data store (redis-py + hiredis): one server or a Redis Cluster.

Layout, for a store with prefix ``P`` and a series ``K`` (``{...}`` is a cluster hash
tag, so every key of a series lives on one node)::

    sr:{P/K}:m   hash   node=series|value, kind, dtype, shape (JSON), count, pieces
    sr:{P/K}:p:… string one piece (at most 1 MiB) of an encoded block
    sr:{P/K}:b   list   the names of the pieces, in order
    sr:{P/K}:e   list   per block "rows:pieces", both cumulative (for range reads)
    sr:{P/K}:w   hash   writer id -> last block sequence number applied (dedup)
    sr:{P/K}:v   list   a single value from set(), codec-encoded, in pieces
    sr:{P}:index set    every series and value key;  sr:{P}:groups  set of groups
    sr:{P}:attrs hash   store metadata (JSON values), provenance included

A dense block is the raw bytes of its C-ordered little-endian rows, so
``np.frombuffer(b"".join(MGET(*LRANGE sr:{P/K}:b 0 -1)), dtype).reshape(-1, *shape)``
reads a series without simrecorder. Other kinds store one codec-encoded list per block.

A block's pieces are written with SET (Redis keeps the received string as is: 1 MiB
SETs run at ~2x the speed of pushing the same bytes into a list), then a Lua script
commits it: it checks the series' schema, appends the piece names, advances the
counters and records ``(writer, sequence)``. A retried block is recognised and
skipped, so a block is committed exactly once even when a connection drops between
sending it and reading the reply. Several writers may append to one series: blocks
never interleave, each writer's blocks keep their order.
"""

from __future__ import annotations

import itertools
import json
import uuid
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

import numpy as np
import redis
import redis.exceptions

from .. import _codec
from .._keys import parent_keys, validate_key
from .._provenance import provenance
from .._schema import DENSE, STR, SeriesSpec
from ..errors import (
    AuthenticationFailedError,
    KeyConflictError,
    KeyNotFoundError,
    SchemaError,
    StoreConnectionError,
    StoreFormatError,
)
from ._values import jsonable
from ._view import SeriesView
from .base import DataStore, NodeType, check_key_free

__all__ = ["RedisClusterDataStore", "RedisDataStore", "RedisView"]

FORMAT_VERSION = 1
_DEFAULT_PREFIX = "simrecorder"

_APPEND = """
local last = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= last then return 0 end
local node = redis.call('HGET', KEYS[1], 'node')
if node then
  if node ~= 'series' then return redis.error_reply('SRCONFLICT ' .. node) end
  local have = redis.call('HMGET', KEYS[1], 'kind', 'dtype', 'shape')
  if have[1] ~= ARGV[4] or have[2] ~= ARGV[5] or have[3] ~= ARGV[6] then
    return redis.error_reply('SRSCHEMA ' .. have[1] .. ' ' .. have[2] .. ' ' .. have[3])
  end
else
  redis.call('HSET', KEYS[1], 'node', 'series', 'kind', ARGV[4], 'dtype', ARGV[5],
             'shape', ARGV[6], 'count', 0, 'pieces', 0)
end
local n = tonumber(ARGV[7])
for i = 1, n do redis.call('RPUSH', KEYS[2], ARGV[7 + i]) end
local count = redis.call('HINCRBY', KEYS[1], 'count', tonumber(ARGV[3]))
local pieces = redis.call('HINCRBY', KEYS[1], 'pieces', n)
redis.call('RPUSH', KEYS[3], count .. ':' .. pieces)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
return 1
"""


def _translate(exc: Exception, where: str) -> Exception:
    """redis-py's exceptions as simrecorder's, naming the server."""
    if isinstance(exc, redis.exceptions.AuthenticationError) or (
        isinstance(exc, redis.exceptions.ResponseError)
        and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
    ):
        return AuthenticationFailedError(
            f"Redis at {where} refused the credentials ({exc}): check password= / username="
        )
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return StoreConnectionError(
            f"cannot reach Redis at {where}: {exc}. Is redis-server running there? "
            "(simrecorder.RedisServer(data_directory) starts one)"
        )
    return exc


class RedisView(SeriesView):
    """Lazy view of a dense series in Redis: reads only the blocks a slice needs."""

    def __init__(self, store: RedisDataStore, key: str, spec: SeriesSpec) -> None:
        self._store = store
        self._key = key
        self._spec = spec

    @property
    def shape(self) -> tuple[int, ...]:
        # docstring inherited
        return (self._store._count(self._key), *self._spec.shape)

    @property
    def dtype(self) -> np.dtype:
        # docstring inherited
        return self._spec.dtype

    def _read(self, index: Any) -> Any:
        # docstring inherited
        parts = index if isinstance(index, tuple) else (index,)
        first, rest = (parts[0], parts[1:]) if parts else (slice(None), ())
        length = len(self)
        if isinstance(first, slice):
            start, stop, step = first.indices(length)
            data = self._store._read_rows(self._key, self._spec, start, max(start, stop))
            return data[(slice(None, None, step), *rest)]
        if first is Ellipsis:
            return self._store._read_rows(self._key, self._spec, 0, length)[index]
        row = int(first)
        if row < 0:
            row += length
        if not 0 <= row < length:
            raise IndexError(f"index {first} is out of bounds for a series of {length} samples")
        return self._store._read_rows(self._key, self._spec, row, row + 1)[(0, *rest)]


class RedisDataStore(DataStore):
    """Store series in Redis: per series a list of encoded blocks plus a small hash.

    Parameters
    ----------
    server_host
        Host name of the server.
    redis_port
        Its port.
    db
        Database number.
    prefix
        Namespace of this store's keys; runs with different prefixes share a server.
    password, username
        Credentials (``requirepass`` / ACL user).
    ssl
        Use TLS; ``ssl_*`` keyword arguments go to redis-py.
    data_directory
        Accepted for SimRecorder compatibility and ignored: persistence is the
        server's business (see :class:`~simrecorder.RedisServer`).
    mode
        ``'a'`` (default) or ``'r'`` (read-only).
    **redis_kwargs
        More options for ``redis.Redis`` (timeouts, ``ssl_ca_certs``, ...).

    Notes
    -----
    Appends are queued and sent in one pipeline on :meth:`flush` (the recorder
    flushes after every block round). If the server is unreachable, ``flush`` raises
    :class:`~simrecorder.errors.StoreConnectionError` and keeps the queue; the next
    ``flush`` sends it again, and blocks already applied are skipped.
    """

    protocol = "redis"
    persistent = True
    supports_lazy_views = True
    supports_concurrent_writers = True
    #: Blocks and values are cut into pieces of at most this many bytes: far below
    #: Redis' 512 MB string limit, and the size Redis stores fastest.
    max_piece_bytes = 1 << 20
    #: Queued bytes that trigger sending the pipeline before flush().
    max_queued_bytes = 64 << 20

    def __init__(
        self,
        server_host: str = "localhost",
        redis_port: int = 6379,
        db: int = 0,
        prefix: str | None = None,
        password: str | None = None,
        username: str | None = None,
        ssl: bool = False,
        data_directory: str | None = None,
        mode: str = "a",
        **redis_kwargs: Any,
    ) -> None:
        if mode not in ("a", "r"):
            raise ValueError(f"mode must be 'a' or 'r', got {mode!r}")
        super().__init__(read_only=(mode == "r"))
        self.host = server_host
        self.port = int(redis_port)
        self.db = int(db)
        self.prefix = _DEFAULT_PREFIX if prefix is None else prefix
        if not self.prefix or any(c in self.prefix for c in "{}\x00"):
            raise ValueError(f"prefix must be non-empty without '{{', '}}' or NUL: {prefix!r}")
        self.username = username
        self.ssl = ssl
        self._password = password
        self._redis_kwargs = redis_kwargs
        self.mode = mode
        self._writer = uuid.uuid4().hex
        self._seq = 0
        self._queue: list[tuple[str, tuple[Any, ...]]] = []
        self._queued_bytes = 0
        self._indexed: set[str] = set()
        self._client: Any = None
        self._connect()

    # -- identity -----------------------------------------------------------------------
    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisDataStore:
        # docstring inherited
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        options: dict[str, Any] = {
            "server_host": parsed.hostname or "localhost",
            "redis_port": parsed.port or 6379,
            "ssl": parsed.scheme in ("rediss", "rediss+cluster"),
        }
        if parsed.path.strip("/"):
            options["db"] = int(parsed.path.strip("/"))
        if parsed.username:
            options["username"] = unquote(parsed.username)
        if parsed.password:
            options["password"] = unquote(parsed.password)
        if "prefix" in query:
            options["prefix"] = query["prefix"]
        options.update(kwargs)
        return cls(**options)

    @property
    def url(self) -> str:
        # docstring inherited (the password is left out)
        scheme = "rediss" if self.ssl else "redis"
        user = f"{quote(self.username)}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}/{self.db}?prefix={quote(self.prefix)}"

    # -- connection ---------------------------------------------------------------------
    def _make_client(self) -> Any:
        options = _client_defaults()
        options.update(self._redis_kwargs)
        return redis.Redis(
            host=self.host, port=self.port, db=self.db, password=self._password,
            username=self.username, ssl=self.ssl, **options,
        )  # fmt: skip

    def _connect(self) -> None:
        self._client = self._make_client()
        try:
            self._client.ping()
            self._init_attrs()
        except redis.exceptions.RedisError as exc:
            self._client.close()
            raise _translate(exc, self._where) from exc

    def _k(self, key: str, suffix: str) -> str:
        return f"sr:{{{self.prefix}/{key}}}:{suffix}"

    @property
    def _index_key(self) -> str:
        return f"sr:{{{self.prefix}}}:index"

    @property
    def _groups_key(self) -> str:
        return f"sr:{{{self.prefix}}}:groups"

    @property
    def _attrs_key(self) -> str:
        return f"sr:{{{self.prefix}}}:attrs"

    def _init_attrs(self) -> None:
        found = self._client.hget(self._attrs_key, "simrecorder_format")
        if found is None:
            if self.read_only:
                return
            info = provenance(redis_py_version=redis.__version__)
            info["simrecorder_format"] = FORMAT_VERSION
            for name, value in info.items():  # first writer wins, the others keep it
                self._client.hsetnx(self._attrs_key, name, json.dumps(value))
        elif int(json.loads(found)) > FORMAT_VERSION:
            raise StoreFormatError(
                f"Redis prefix {self.prefix!r} at {self._where} has simrecorder format "
                f"{json.loads(found)}; this version reads up to {FORMAT_VERSION}: upgrade"
            )

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            raise _translate(exc, self._where) from exc

    # -- lifecycle ----------------------------------------------------------------------
    def _open(self) -> None:
        self._connect()

    def _close(self) -> None:
        try:
            self._send()
        finally:
            self._client.close()

    def flush(self) -> None:
        # docstring inherited: sends the queued blocks in one pipeline
        self._check_open()
        self._send()

    def _send(self) -> None:
        if not self._queue:
            return
        pipe = self._client.pipeline(transaction=False)
        for method, args in self._queue:
            getattr(pipe, method)(*args)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as exc:
            raise _translate(exc, self._where) from exc  # the queue is kept for a retry
        queue, self._queue, self._queued_bytes = self._queue, [], 0
        for (method, args), result in zip(queue, results, strict=True):
            if isinstance(result, Exception):
                raise self._script_error(method, args, result)

    def _script_error(self, method: str, args: tuple[Any, ...], error: Exception) -> Exception:
        text = str(error)
        is_append = method == "execute_command" and args[0] == "EVAL"
        key = args[3][len("sr:{") + len(self.prefix) + 1 : -len("}:m")] if is_append else "?"
        if "SRSCHEMA" in text:
            return SchemaError(f"key {key!r} in {self!r}: another writer stored it as {text}")
        if "SRCONFLICT" in text:
            return KeyConflictError(f"key {key!r} in {self!r} is a {text.split()[-1]}")
        return _translate(error, self._where)

    # -- nodes --------------------------------------------------------------------------
    def node_type(self, key: str) -> NodeType | None:
        # docstring inherited
        self._check_open(key)
        self._send()
        node = self._call("hget", self._k(key, "m"), "node")
        if node is not None:
            return node.decode()
        if self._call("sismember", self._groups_key, key):
            return "group"
        return None

    def series_spec(self, key: str) -> SeriesSpec | None:
        # docstring inherited
        self._check_open(key)
        self._send()
        node, kind, dtype, shape = self._call(
            "hmget", self._k(key, "m"), "node", "kind", "dtype", "shape"
        )
        if node != b"series":
            return None
        if kind == b"dense":
            return SeriesSpec(DENSE, np.dtype(dtype.decode()), tuple(json.loads(shape)))
        return SeriesSpec(kind.decode())

    def _count(self, key: str) -> int:
        self._send()
        return int(self._call("hget", self._k(key, "m"), "count") or 0)

    # -- series -------------------------------------------------------------------------
    def _pieces(self, data: bytes | memoryview) -> list[Any]:
        size = self.max_piece_bytes
        if len(data) <= size:
            return [data]
        view = memoryview(data)
        return [view[i : i + size] for i in range(0, len(view), size)]

    def append_block(self, key: str, spec: SeriesSpec, block: Any) -> None:
        # docstring inherited
        self._check_writable(key)
        rows = len(block)
        if not rows:
            return
        if spec.kind == DENSE:
            array = np.ascontiguousarray(block, dtype=spec.dtype.newbyteorder("<"))
            payload: Any = memoryview(array).cast("B") if array.nbytes else b""
            dtype, shape = array.dtype.str, json.dumps(list(spec.shape))
        else:
            payload = _codec.encode(list(block))
            dtype, shape = "", ""
        pieces = self._pieces(payload)
        keys = [self._k(key, s) for s in ("m", "b", "e", "w")]
        self._seq += 1
        names = [self._k(key, f"p:{self._writer}:{self._seq}:{i}") for i in range(len(pieces))]
        if key not in self._indexed:
            self._queue.append(("sadd", (self._index_key, key)))
            for group in parent_keys(key):
                self._queue.append(("sadd", (self._groups_key, group)))
            self._indexed.add(key)
        for name, piece in zip(names, pieces, strict=True):
            self._queue.append(("set", (name, piece)))
        head = [self._writer, self._seq, rows, spec.kind, dtype, shape, len(pieces)]
        self._queue.append(("execute_command", ("EVAL", _APPEND, 4, *keys, *head, *names)))
        self._queued_bytes += len(payload)
        if self._queued_bytes >= self.max_queued_bytes:
            self._send()

    def _fetch(self, key: str, first: int, last: int) -> list[bytes]:
        """Pieces ``first..last`` (inclusive) of a series, in order."""
        names = self._call("lrange", self._k(key, "b"), first, last)
        data: list[bytes] = []
        for i in range(0, len(names), 256):  # MGET in batches: bounded replies
            data.extend(self._call("mget", names[i : i + 256]))
        if any(piece is None for piece in data):
            raise StoreFormatError(f"series {key!r} in {self!r} is missing pieces")
        return data

    def _ends(self, key: str) -> tuple[list[int], list[int]]:
        rows, pieces = [0], [0]
        for item in self._call("lrange", self._k(key, "e"), 0, -1):
            r, p = item.split(b":")
            rows.append(int(r))
            pieces.append(int(p))
        return rows, pieces

    def _read_rows(self, key: str, spec: SeriesSpec, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a dense series, fetching only the blocks they span."""
        self._check_open(key)
        self._send()
        empty = np.empty((0, *spec.shape), dtype=spec.dtype)
        if stop <= start:
            return empty
        rows, pieces = self._ends(key)
        first = bisect_right(rows, start) - 1
        last = min(bisect_right(rows, stop - 1) - 1, len(rows) - 2)
        if first > last:
            return empty
        data = self._fetch(key, pieces[first], pieces[last + 1] - 1)
        out = _join_rows(data, rows[last + 1] - rows[first], spec)
        return out[start - rows[first] : stop - rows[first]]

    def get_all(self, key: str) -> Any:
        # docstring inherited
        self._check_open(key)
        spec = self.series_spec(key)
        if spec is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        if spec.kind == DENSE:
            return RedisView(self, key, spec)
        _, pieces = self._ends(key)
        data = self._fetch(key, 0, -1)
        items: list[Any] = []
        for lo, hi in itertools.pairwise(pieces):
            items.extend(_codec.decode(b"".join(data[lo:hi])))
        if spec.kind == STR or spec.kind == "bytes":
            return items
        return [_codec.decode(item) for item in items]

    # -- single values ------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        # docstring inherited
        validate_key(key)
        self._check_writable(key)
        check_key_free(self, key, "value")
        payload = _codec.encode_for(key, value)
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self._k(key, "v"))
        pipe.rpush(self._k(key, "v"), *self._pieces(payload))
        pipe.hset(self._k(key, "m"), mapping={"node": "value"})
        pipe.sadd(self._index_key, key)
        for group in parent_keys(key):
            pipe.sadd(self._groups_key, group)
        try:
            pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise _translate(exc, self._where) from exc

    def _get_value(self, key: str) -> Any:
        # docstring inherited
        return _codec.decode(b"".join(self._call("lrange", self._k(key, "v"), 0, -1)))

    def keys(self, prefix: str = "") -> list[str]:
        # docstring inherited
        self._check_open()
        self._send()
        names = [name.decode() for name in self._call("smembers", self._index_key)]
        if prefix:
            names = [k for k in names if k == prefix or k.startswith(prefix + "/")]
        return sorted(names)

    # -- metadata -----------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        # docstring inherited
        self._check_open()
        raw = self._call("hgetall", self._attrs_key)
        return {name.decode(): json.loads(value) for name, value in raw.items()}

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # docstring inherited
        self._check_writable()
        if attrs:
            mapping = {name: json.dumps(jsonable(v), default=repr) for name, v in attrs.items()}
            self._call("hset", self._attrs_key, mapping=mapping)


class RedisClusterDataStore(RedisDataStore):
    """:class:`RedisDataStore` on a Redis Cluster (``redis+cluster://host:port``).

    Every key of a series carries the hash tag ``{prefix/key}``, so a series lives on
    one node and its Lua append stays atomic; different series spread over the nodes.
    """

    protocol = "redis+cluster"

    def __init__(self, server_host: str = "localhost", redis_port: int = 6379, **kwargs: Any):
        kwargs.pop("db", None)  # a cluster has only database 0
        super().__init__(server_host, redis_port, **kwargs)

    def _make_client(self) -> Any:
        from redis.cluster import RedisCluster

        options = _client_defaults()
        options.update(self._redis_kwargs)
        return RedisCluster(
            host=self.host, port=self.port, password=self._password,
            username=self.username, ssl=self.ssl, **options,
        )  # fmt: skip

    @property
    def url(self) -> str:
        # docstring inherited
        scheme = "rediss+cluster" if self.ssl else "redis+cluster"
        user = f"{quote(self.username)}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}?prefix={quote(self.prefix)}"


def _client_defaults() -> dict[str, Any]:
    # redis-py's default retry backs off for seconds; a recorder wants a quick, clear
    # error it can keep blocks through (they are resent on the next flush anyway)
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return {
        "socket_connect_timeout": 5,
        "socket_timeout": 60,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
    }


def _join_rows(pieces: list[bytes], rows: int, spec: SeriesSpec) -> np.ndarray:
    """Copy the pieces of consecutive dense blocks into one new array."""
    out = np.empty((rows, *spec.shape), dtype=spec.dtype)
    if not out.nbytes:
        return out
    target = memoryview(out).cast("B")
    position = 0
    for piece in pieces:
        target[position : position + len(piece)] = piece
        position += len(piece)
    if position != out.nbytes:
        raise StoreFormatError(f"series data has {position} bytes, expected {out.nbytes}")
    return out

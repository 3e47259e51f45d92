"""Redis data store (redis-py + hiredis): one server or a Redis Cluster.

Layout, for a store with prefix ``P`` (``n`` = ``len(P)``) and a series ``K``
(``{...}`` is a cluster hash tag, so every key of a series lives on one node)::

    sr2:{n:P/K}:m    hash   node=series|value, kind, dtype, shape (JSON), count, pieces
    sr2:{n:P/K}:p:…  string one piece (at most 1 MiB) of an encoded block
    sr2:{n:P/K}:b    list   the names of the pieces, in order
    sr2:{n:P/K}:e    list   per block "rows:pieces", both cumulative (for range reads)
    sr2:{n:P/K}:w    hash   writer identity -> last block sequence number applied
    sr2:{n:P/K}:v    list   a single value from set(), codec-encoded, in pieces
    sr2:{n:P/K}:a    hash   the series' attributes (``Recorder.describe``), JSON values
    sr2:{n:P}:index  set    every series and value key;  sr2:{n:P}:groups  set of groups
    sr2:{n:P}:attrs  hash   store metadata (JSON values), provenance included

The length ``n`` in front of the prefix makes the layout unambiguous: prefixes
``exp`` and ``exp/b`` never share a key (``sr2:{3:exp/b/x}`` is not ``sr2:{5:exp/b/x}``).
Stores written by format 1 (``sr:{P/K}:…``, where nested prefixes could mix) are still
read and appended to in their own layout.

A dense block is the raw bytes of its C-ordered little-endian rows, so
``np.frombuffer(b"".join(MGET(*LRANGE sr2:{n:P/K}:b 0 -1)), dtype).reshape(-1, *shape)``
reads a series without simrecorder. Other kinds store one codec-encoded list per block.
This is the block format of :mod:`simrecorder.datastores._blockformat`, shared with
the block store (``blocks+<url>``), and so is the range reader: the ``:e`` list is
the ends index that :func:`~simrecorder.datastores._blockformat.block_span` searches.

**Runs.** A prefix holds one run; it exists when its attrs hash (or index) does. The
open mode (:mod:`simrecorder._modes`) decides what a store does with it: by default a
new prefix is created and an existing one is read (writing raises
:class:`~simrecorder.errors.StoreExistsError`); several processes writing one run
pass ``mode='a'``. ``mode='w'`` and :func:`delete_redis_run` delete a run's keys with
``SCAN MATCH`` on its exact key patterns and ``UNLINK`` in batches (never
``FLUSHDB``); :func:`list_redis_runs` lists the runs on a server.

**Exactly once.** A block's pieces are written with SET (Redis keeps the received
string as is: 1 MiB SETs run at ~2x the speed of pushing the same bytes into a list),
then a Lua script commits it: it checks that every piece exists (else ``SRMISSING``),
checks the series' schema, appends the piece names and advances the counters. Each
writer numbers its blocks *per series* (1, 2, 3, ...) under an identity of its own,
and the script applies them in strict order: a number at or below the last one
applied is a retry and is skipped; the next number is applied; a larger one is
refused with ``SRGAP`` (an earlier block is still on its way). So a block is
committed exactly once even when a connection drops between sending it and reading
the reply, and a series never references a piece that is not there.

**The queue.** ``append_block`` queues a block as one *unit* (its SETs and the
commit); a new key adds a unit of index SADDs. :meth:`RedisDataStore.flush` sends the
whole queue in one pipeline -- on one server inside ``MULTI``/``EXEC``, so a flush
(one recorder epoch) is applied whole or not at all, also when the writer is killed
in the middle. When a flush holds 2 MiB of blocks or more (``presend_bytes``), their
pieces go in a plain pipeline just before that transaction (inside it they cost a
server with an append-only file up to twice the CPU per byte); they are invisible
until committed, the transaction is sent only when all of them were stored, and a
writer killed between the two leaves unreferenced pieces, deleted with the run.
Every reply is checked: a unit is forgotten only when its last command succeeded;
the others stay queued in order and ``flush()`` raises on every call until they are
delivered. When the queue
is over ``max_queued_bytes``, ``append_block`` first tries to send it, and raises
(taking nothing) if that fails and the queue is still over the limit; such an early
send (and a read, which sends the queue first) splits an epoch in two, each applied
whole. A kept block is copied after a failed send, so the caller may reuse the array
it came from.

**Faults.**

- ``maxmemory`` (``OOM``) or a failing background save (``MISCONF``):
  :class:`~simrecorder.errors.StoreFullError`; everything stays queued.
- Server or node away, ``CLUSTERDOWN``, ``TRYAGAIN``, ``LOADING``, ``READONLY``,
  ``MASTERDOWN``, ``MOVED``/``ASK`` that do not settle:
  :class:`~simrecorder.errors.StoreConnectionError` naming ``host:port``; everything
  stays queued. On a cluster the blocks of healthy nodes are delivered (the pipeline
  is not a transaction there: a transaction cannot span hash slots).
- Another writer stored a series with another schema: the refused blocks leave the
  queue and ``flush()`` raises :class:`~simrecorder.errors.SchemaError` (or
  :class:`~simrecorder.errors.KeyConflictError`) naming the key until
  :meth:`~RedisDataStore.surrender` hands them back (the recorder quarantines them).
  ``surrender()`` also hands back the whole queue when the server stays away.
- Server restarted (its ``run_id`` changed) or its data gone (the attrs hash is
  missing): the attrs, the index and the groups are written again; series whose
  earlier blocks are gone are renumbered under a new identity so new blocks are
  stored, and the next ``flush()`` raises :class:`RedisDataLostError` naming them.
- ``os.fork()``: the child's stores get a new writer identity, an empty queue (the
  queued blocks belong to the parent) and a new connection pool.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import uuid
import weakref
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import numpy as np
import redis

from .. import _codec
from .._keys import parent_keys, validate_key
from .._modes import check_mode, plan_open
from .._provenance import provenance
from .._redis_client import REDIS_ERRORS as _REDIS_ERRORS
from .._redis_client import (
    check_port,
    client_from_url,
    make_client,
    parse_redis_url,
    probe,
    redact,
)
from .._redis_client import translate as _translate
from .._schema import DENSE, SeriesSpec
from ..errors import (
    AuthenticationFailedError,
    InvalidArgumentError,
    KeyConflictError,
    KeyNotFoundError,
    SchemaError,
    SimRecorderError,
    StoreConnectionError,
    StoreFormatError,
    StoreNotFoundError,
    StoreWriteError,
    is_transient,
)
from ._blockformat import (
    block_span,
    decode_block,
    dense_view,
    encode_block,
    join_dense_blocks,
    stored_dtype,
)
from ._values import jsonable
from ._view import RowRangeView
from .base import DataStore, NodeType, check_key_free

__all__ = [
    "RedisClusterDataStore",
    "RedisDataLostError",
    "RedisDataStore",
    "RedisView",
    "delete_redis_run",
    "list_redis_runs",
]

FORMAT_VERSION = 2
_DEFAULT_PREFIX = "simrecorder"

# KEYS: m, b, e, w, piece 1..n;  ARGV: identity, seq, rows, kind, dtype, shape
_APPEND = """
local last = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq <= last then return 0 end
if seq > last + 1 then return redis.error_reply('SRGAP ' .. last) end
for i = 5, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    return redis.error_reply('SRMISSING ' .. KEYS[i])
  end
end
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
local n = #KEYS - 4
for i = 5, #KEYS do redis.call('RPUSH', KEYS[2], KEYS[i]) end
local count = redis.call('HINCRBY', KEYS[1], 'count', tonumber(ARGV[3]))
local pieces = redis.call('HINCRBY', KEYS[1], 'pieces', n)
redis.call('RPUSH', KEYS[3], count .. ':' .. pieces)
redis.call('HSET', KEYS[4], ARGV[1], seq)
return 1
"""


class RedisDataLostError(StoreFormatError):
    """The Redis server lost data this store had written (e.g. it restarted without
    persistence, or a node came back empty).

    Blocks recorded since are stored; the series named here miss their earlier part.

    Attributes
    ----------
    keys
        The series and values whose earlier data is gone.
    """

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


class _Connects:
    """Counts connections a client opened (a reconnect may mean a new server)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def bump(self, connection: Any = None) -> None:
        self.count += 1


class _Series:
    """This writer's state for one series: its identity and the last block acknowledged."""

    __slots__ = ("acked", "ident")

    def __init__(self, ident: str) -> None:
        self.ident = ident
        self.acked = 0


class _Unit:
    """Commands sent together; the unit is delivered when its last command succeeded."""

    __slots__ = ("done", "key", "nbytes")
    done: bool
    key: str | None
    nbytes: int

    def commands(self, store: RedisDataStore) -> list[tuple[str, tuple[Any, ...]]]:
        raise NotImplementedError


class _Fixed(_Unit):
    """Idempotent commands (index and group SADDs, attrs HSETNX)."""

    __slots__ = ("_commands",)

    def __init__(self, key: str | None, commands: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.key = key
        self.nbytes = 0
        self.done = False
        self._commands = commands

    def commands(self, store: RedisDataStore) -> list[tuple[str, tuple[Any, ...]]]:
        return self._commands


class _Block(_Unit):
    """One block: its piece SETs and the commit script.

    The identity and sequence number are fixed when the unit is first sent (``sent``);
    until then they may be renumbered.
    """

    __slots__ = (
        "block", "dtype", "ident", "owned", "pieces", "rows", "sent", "seq", "shape", "spec",
    )  # fmt: skip
    key: str

    def __init__(self, key: str, spec: SeriesSpec, block: Any, pieces: list[Any],
                 dtype: str, shape: str, nbytes: int) -> None:  # fmt: skip
        self.key = key
        self.spec = spec
        self.block = block
        self.pieces = pieces
        self.rows = len(block)
        self.dtype = dtype
        self.shape = shape
        self.nbytes = nbytes
        self.done = False
        self.sent = False
        self.owned = False
        self.ident = ""
        self.seq = 0

    def own(self) -> None:
        """Copy the data: the block may be a view of an array its caller reuses, which
        is safe only while the block is sent before the caller's next step."""
        if not self.owned:
            self.pieces = [bytes(piece) for piece in self.pieces]
            if isinstance(self.block, np.ndarray):
                self.block = self.block.copy()
            self.owned = True

    def commands(self, store: RedisDataStore) -> list[tuple[str, tuple[Any, ...]]]:
        k = store._k
        names = [k(self.key, f"p:{self.ident}:{self.seq}:{i}") for i in range(len(self.pieces))]
        out: list[tuple[str, tuple[Any, ...]]] = [
            ("set", (name, piece)) for name, piece in zip(names, self.pieces, strict=True)
        ]
        keys = [k(self.key, s) for s in ("m", "b", "e", "w")] + names
        head = [self.ident, self.seq, self.rows, self.spec.kind, self.dtype, self.shape]
        out.append(("execute_command", ("EVAL", _APPEND, len(keys), *keys, *head)))
        return out


class RedisView(RowRangeView):
    """Lazy view of a dense series in Redis: reads only the blocks a slice needs."""

    def __init__(self, store: RedisDataStore, key: str, spec: SeriesSpec) -> None:
        super().__init__(spec.dense_dtype, spec.dense_shape)
        self._store = store
        self._key = key
        self._spec = spec

    def _length(self) -> int:
        return self._store._count(self._key)

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        return self._store._read_rows(self._key, self._spec, start, stop)

    def _describe(self) -> str:
        return f"the series {self._key!r} in {self._store!r}"


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
        Namespace of this store's keys; runs with different prefixes share a server
        (also nested ones such as ``exp`` and ``exp/b``).
    password, username
        Credentials (``requirepass`` / ACL user).
    ssl
        Use TLS; ``ssl_*`` keyword arguments go to redis-py.
    data_directory
        Accepted for SimRecorder compatibility and ignored: persistence is the
        server's business (see :class:`~simrecorder.RedisServer`).
    mode
        See :mod:`simrecorder._modes`. ``None`` (default): a prefix that holds no run
        is created for writing; one that holds a run opens read-only, and writing to
        it raises :class:`~simrecorder.errors.StoreExistsError` (pass ``'a'`` to
        resume the run, ``'w'`` to overwrite it). ``'r'`` reads an existing run and
        writes nothing; ``'r+'`` resumes an existing run; ``'a'`` creates or resumes
        (what concurrent writers of one run pass); ``'w'`` deletes the run's keys
        (in batches, never ``FLUSHDB``) and starts afresh; ``'w-'`` creates only.
    **redis_kwargs
        More options for ``redis.Redis`` (timeouts, ``ssl_ca_certs``, ...); they
        override simrecorder's defaults (5 s connect timeout, 60 s socket timeout,
        3 retries with a backoff capped at 0.5 s).

    Notes
    -----
    Appends are queued and sent on :meth:`flush` (the recorder flushes after every
    block round) in one ``MULTI``/``EXEC`` transaction, so a flush is applied whole
    or not at all. If the server is unreachable or full, ``flush`` raises
    :class:`~simrecorder.errors.StoreConnectionError` or
    :class:`~simrecorder.errors.StoreFullError` and keeps the queue; every later
    ``flush`` sends it again until it is delivered, and blocks already applied are
    skipped. See the module documentation for the other faults.
    """

    protocol = "redis"
    persistent = True
    supports_lazy_views = True
    supports_series_attrs = True  # see set_series_attrs
    supports_concurrent_writers = True
    #: Blocks and values are cut into pieces of at most this many bytes: far below
    #: Redis' 512 MB string limit, and the size Redis stores fastest.
    max_piece_bytes = 1 << 20
    #: On one server, when a flush holds at least this many bytes of blocks, their
    #: pieces are sent in a plain pipeline just before the MULTI/EXEC that commits
    #: them (2/3 of the server's CPU per byte with an append-only file; see
    #: ``time_benchmarks.redis_large``).
    presend_bytes = 2 << 20
    #: Queued bytes over which append_block sends the queue before taking a block.
    max_queued_bytes = 64 << 20
    #: Send a flush as one MULTI/EXEC transaction (not possible across cluster slots).
    _transactional = True

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
        mode: str | None = None,
        **redis_kwargs: Any,
    ) -> None:
        mode = check_mode(mode)
        super().__init__()
        self.host = server_host
        self.port = check_port(redis_port)
        try:
            self.db = int(db)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"Redis db must be an integer; got {db!r}") from None
        self.prefix = _DEFAULT_PREFIX if prefix is None else prefix
        if not isinstance(self.prefix, str) or not _valid_prefix(self.prefix):
            raise InvalidArgumentError(
                f"Redis prefix must be a non-empty str without '{{', '}}' or NUL; got {prefix!r}"
            )
        self.username = username
        self.ssl = ssl
        self._password = password
        self._redis_kwargs = redis_kwargs
        self.mode = mode
        self._base = f"sr2:{{{len(self.prefix)}:{self.prefix}"
        self._client: Any = None
        self._connects = _Connects()
        self._seen_connects = 0
        self._run_ids: set[str] = set()
        self._own_attrs: dict[str, str] = {}
        self._reset_writer()
        self._connect(first=True, mode=mode)
        _STORES.add(self)

    def _reset_writer(self) -> None:
        """A new writer identity with nothing queued (at start and in a forked child)."""
        self._writer = uuid.uuid4().hex
        self._queue: list[_Unit] = []
        self._queued_bytes = 0
        self._series: dict[str, _Series] = {}
        self._indexed: set[str] = set()
        self._values: set[str] = set()
        self._had_data: set[str] = set()  # series with blocks stored by this store
        self._restart_pending = False
        self._lost: dict[str, str] = {}
        self._rejected: list[tuple[str, SeriesSpec, Any, BaseException]] = []
        self._problems: list[BaseException] = []

    # -- identity -----------------------------------------------------------------------
    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisDataStore:
        """Create a store from ``redis://[user[:password]@]host[:port][/db]?prefix=P``
        (``rediss://`` for TLS, ``redis+cluster://`` for a cluster).

        The URL is parsed by redis-py (``redis.connection.parse_url``): every query
        option redis-py knows (``socket_timeout``, ``ssl_ca_certs``, ...) is passed on
        with its type; ``prefix`` and ``mode`` are simrecorder's. ``kwargs`` override
        what the URL says.

        Raises
        ------
        InvalidArgumentError
            A bad port, option value or unknown option.
        """
        parsed = parse_redis_url(url)
        if parsed.cluster != (cls.protocol == "redis+cluster"):
            want = "redis+cluster://" if cls.protocol == "redis+cluster" else "redis://"
            raise InvalidArgumentError(f"{cls.__name__} takes {want} URLs; got {redact(url)!r}")
        options: dict[str, Any] = dict(parsed.options)
        options.update(server_host=parsed.host, redis_port=parsed.port, ssl=parsed.ssl)
        if not parsed.cluster:
            options["db"] = parsed.db
        for name in ("username", "password", "prefix", "mode"):
            if getattr(parsed, name) is not None:
                options[name] = getattr(parsed, name)
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
        return make_client(
            self.host, self.port, cluster=self.protocol == "redis+cluster", db=self.db,
            on_connect=self._connects.bump, password=self._password, username=self.username,
            ssl=self.ssl, **self._redis_kwargs,
        )  # fmt: skip

    @property
    def _redis(self) -> Any:
        """The redis-py client, created again on first use after a fork."""
        if self._client is None:
            try:
                self._client = self._make_client()
            except _REDIS_ERRORS as exc:
                raise _translate(exc, self._where) from exc
        return self._client

    def _connect(self, *, first: bool = False, mode: str | None = None) -> None:
        """Connect; the ``first`` time decide what ``mode`` does with the prefix:
        create, read, resume or replace the run (a reopen after ``close()`` keeps
        that decision)."""
        self._client = None
        if first:  # a wrong port fails within seconds (see probe)
            probe(
                self.host, self.port, db=self.db, password=self._password,
                username=self.username, ssl=self.ssl, **self._redis_kwargs,
            )  # fmt: skip
        try:
            self._redis.ping()
            plan = None
            if first:
                where = f"Redis prefix {self.prefix!r} at {self._where} ({self.url})"
                plan = plan_open(mode, _run_exists(self._redis, self.prefix), where)
                if plan.replace:
                    _delete_run(self._redis, self.prefix)
                self._apply_open_plan(plan)
            self._init_attrs()
            if not self.read_only:
                self._run_ids = self._server_run_ids()
            self._seen_connects = self._connects.count
            if plan is not None and plan.resume:
                self._note_resume()
        except BaseException as exc:
            if self._client is not None:
                self._client.close()
            if isinstance(exc, _REDIS_ERRORS):
                raise _translate(exc, self._where) from exc
            raise

    def _server_run_ids(self) -> set[str]:
        return {str(self._redis.info("server")["run_id"])}

    def _k(self, key: str, suffix: str) -> str:
        return f"{self._base}/{key}}}:{suffix}"

    @property
    def _index_key(self) -> str:
        return f"{self._base}}}:index"

    @property
    def _groups_key(self) -> str:
        return f"{self._base}}}:groups"

    @property
    def _attrs_key(self) -> str:
        return f"{self._base}}}:attrs"

    def _init_attrs(self) -> None:
        found = self._redis.hget(self._attrs_key, "simrecorder_format")
        if found is None:
            legacy_base = f"sr:{{{self.prefix}"
            legacy = self._redis.hget(f"{legacy_base}}}:attrs", "simrecorder_format")
            if legacy is not None and int(json.loads(legacy)) == 1:
                self._base = legacy_base  # a format-1 store: keep its layout
                return
            if self.read_only:
                return
            for name, value in self._provenance().items():  # first writer wins
                self._redis.hsetnx(self._attrs_key, name, value)
        elif int(json.loads(found)) > FORMAT_VERSION:
            raise StoreFormatError(
                f"Redis prefix {self.prefix!r} at {self._where} has simrecorder format "
                f"{json.loads(found)}; this version reads up to {FORMAT_VERSION}: upgrade"
            )

    def _provenance(self) -> dict[str, str]:
        info = provenance(redis_py_version=redis.__version__)
        info["simrecorder_format"] = FORMAT_VERSION
        return {name: json.dumps(value) for name, value in info.items()}

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._redis, method)(*args, **kwargs)
        except _REDIS_ERRORS as exc:
            raise _translate(exc, self._where) from exc

    def _after_fork_in_child(self) -> None:
        # The queued blocks belong to the parent, which sends them; the parent's
        # sockets stay untouched (redis-py only closes its own process' sockets).
        self._reset_writer()
        self._client = None
        self._connects = _Connects()
        self._seen_connects = 0

    # -- lifecycle ----------------------------------------------------------------------
    def _open(self) -> None:
        self._connect()

    def _close(self) -> None:
        try:
            if not self.read_only:
                self._send()
                self._raise_problems()
        finally:
            if self._client is not None:
                self._client.close()

    def flush(self) -> None:
        """Send the queued blocks; raise until every one of them is stored.

        Raises
        ------
        StoreConnectionError, StoreFullError
            The server is away or full: every block not yet stored stays queued and
            the next ``flush()`` sends it again.
        SchemaError
            Another writer stored a series with another schema: the blocks it refused
            left the queue; raised until :meth:`surrender` takes them.
        RedisDataLostError
            The server lost data this store had written (raised once; what was
            recorded since is stored).
        """
        self._check_open()
        if self.read_only:
            return
        self._send()
        self._raise_problems()

    def _raise_problems(self) -> None:
        if self._rejected:  # raised until surrender() takes them
            first = self._rejected[0][3]
            keys = sorted({key for key, *_ in self._rejected})
            raise type(first)(
                f"{first} ({len(self._rejected)} block(s) of {', '.join(map(repr, keys))} "
                f"were refused by {self!r}; surrender() hands them back)"
            ) from first
        if self._problems:
            problem = self._problems.pop(0)
            raise problem
        if self._lost:
            lost, self._lost = self._lost, {}
            raise RedisDataLostError(
                f"Redis at {self._where} lost data of {self!r} (restarted without "
                f"persistence, or a node came back empty): {'; '.join(lost.values())}. "
                "What was recorded since is stored",
                keys=tuple(sorted(lost)),
            )

    def surrender(self) -> list[tuple[str, SeriesSpec, Any]]:
        # docstring inherited: the blocks refused by the server come first
        blocks = [(key, spec, block) for key, spec, block, _ in self._rejected]
        self._rejected = []
        for unit in self._queue:
            if isinstance(unit, _Block) and not unit.done:
                unit.done = True
                blocks.append((unit.key, unit.spec, unit.block))
                # a block sent before may have been applied: number the next ones
                # under a new identity, so they are never taken for its retries
                self._series[unit.key] = _Series(uuid.uuid4().hex)
        self._queue = [unit for unit in self._queue if not unit.done]
        self._queued_bytes = 0
        return blocks

    # -- sending ------------------------------------------------------------------------
    def _send(self) -> None:
        """Send the queue until it is delivered; raise a transient error if it is not.

        Refused blocks and lost data are noted for :meth:`_raise_problems`.
        """
        try:
            self._send_rounds()
        except BaseException:
            for unit in self._queue:
                if isinstance(unit, _Block) and not unit.done:
                    unit.own()
            raise

    def _send_rounds(self) -> None:
        for _ in range(4):
            if self._restart_pending or self._connects.count != self._seen_connects:
                self._check_server()
            self._queue = [unit for unit in self._queue if not unit.done]
            self._queued_bytes = sum(unit.nbytes for unit in self._queue)
            if not self._queue:
                return
            failure = self._send_round()
            if failure is None:
                continue
            if not (self._restart_pending or self._connects.count != self._seen_connects):
                raise failure
        self._queue = [unit for unit in self._queue if not unit.done]
        self._queued_bytes = sum(unit.nbytes for unit in self._queue)
        if self._queue:
            raise StoreConnectionError(
                f"Redis at {self._where} did not take {len(self._queue)} queued unit(s) of "
                f"{self!r} after several attempts; they are kept for the next flush()"
            )

    def _number(self) -> None:
        """Give units not yet sent their identity and the next sequence numbers."""
        following: dict[str, int] = {}
        for unit in self._queue:
            if not isinstance(unit, _Block) or unit.done:
                continue
            state = self._series.get(unit.key)
            if state is None:
                state = self._series[unit.key] = _Series(self._writer)
            expected = following.get(unit.key, state.acked + 1)
            if not unit.sent:
                unit.ident, unit.seq = state.ident, expected
            following[unit.key] = unit.seq + 1

    def _send_round(self) -> BaseException | None:
        """Send the queue in one pipeline (two when the pieces go ahead, see
        :meth:`_presend_count`) and forget the units delivered.

        Returns None when everything was delivered or another round can make progress
        (series renumbered, blocks refused, a restart to handle), else the error to
        raise for the units still queued.
        """
        self._number()
        queue = list(self._queue)
        plans = [unit.commands(self) for unit in queue]
        for unit in queue:
            if isinstance(unit, _Block):
                unit.sent = True
        total = sum(unit.nbytes for unit in queue if isinstance(unit, _Block))
        early = [self._presend_count(u, c, total) for u, c in zip(queue, plans, strict=True)]
        early_replies: list[Any] = []
        if any(early):
            sent = self._execute(
                [c for cs, n in zip(plans, early, strict=True) for c in cs[:n]], False, len(queue)
            )
            if isinstance(sent, BaseException):
                return sent
            early_replies = sent
            failed = self._presend_failures(queue, early, early_replies)
            if failed:  # the transaction is not sent: the flush stays whole
                return self._handle_failures(failed)
        results = self._execute(
            [c for cs, n in zip(plans, early, strict=True) for c in cs[n:]],
            self._transactional, len(queue), check_attrs=True,
        )  # fmt: skip
        if isinstance(results, BaseException):
            return results
        if results[0] == 0:
            self._restart_pending = True
        position, early_position = 1, 0
        failures: list[tuple[_Unit, BaseException]] = []
        for unit, commands, n in zip(queue, plans, early, strict=True):
            count = len(commands) - n
            replies = early_replies[early_position : early_position + n]
            replies += results[position : position + count]
            position += count
            early_position += n
            if not isinstance(replies[-1], BaseException):
                if isinstance(unit, _Block):
                    self._series[unit.key].acked = unit.seq
                    self._had_data.add(unit.key)
                unit.done = True
                continue
            cause = next(r for r in replies if isinstance(r, BaseException))
            failures.append((unit, cause))
        if not failures:
            return None
        return self._handle_failures(failures)

    def _presend_count(
        self, unit: _Unit, commands: list[tuple[str, tuple[Any, ...]]], total: int
    ) -> int:
        """How many of a unit's commands (its piece SETs) go before the transaction.

        On one server, when a flush holds ``presend_bytes`` of blocks or more, the
        pieces are sent in a plain pipeline ahead of the ``MULTI``/``EXEC`` that
        commits them: queued inside a transaction, megabytes of values cost a server
        with an append-only file up to twice the CPU per byte (the whole transaction
        is buffered for the file at once). The pieces are invisible until the commit
        references them, so a flush is still applied whole or not at all.
        """
        if not self._transactional or not isinstance(unit, _Block):
            return 0
        return len(commands) - 1 if total >= self.presend_bytes else 0

    def _execute(self, commands: list[tuple[str, tuple[Any, ...]]], transaction: bool,
                 units: int, check_attrs: bool = False) -> list[Any] | BaseException:  # fmt: skip
        """Send ``commands`` in one pipeline; the replies (errors among them), or the
        error to raise when the pipeline as a whole failed."""
        pipe = self._redis.pipeline(transaction=transaction)
        if check_attrs:
            pipe.exists(self._attrs_key)  # gone: the server lost everything
        for method, args in commands:
            getattr(pipe, method)(*args)
        try:
            return list(pipe.execute(raise_on_error=False))
        except _REDIS_ERRORS as exc:
            error = _translate(exc, self._where)
            if not is_transient(error) and not isinstance(error, AuthenticationFailedError):
                error = StoreWriteError(  # e.g. a transaction refused at queue time
                    f"{self!r}: sending {units} queued unit(s) failed ({error}); "
                    "they are kept for the next flush()"
                )
            error.__cause__ = exc
            return error
        finally:
            pipe.reset()

    @staticmethod
    def _presend_failures(queue: list[_Unit], early: list[int],
                          replies: list[Any]) -> list[tuple[_Unit, BaseException]]:  # fmt: skip
        """The units one of whose pieces sent ahead was refused, with the first error."""
        failures: list[tuple[_Unit, BaseException]] = []
        position = 0
        for unit, n in zip(queue, early, strict=True):
            errors = [r for r in replies[position : position + n] if isinstance(r, BaseException)]
            position += n
            if errors:
                failures.append((unit, errors[0]))
        return failures

    def _handle_failures(self, failures: list[tuple[_Unit, BaseException]]) -> BaseException | None:
        """Sort the failed units out; return the error to raise, or None to send again."""
        gaps: dict[str, int] = {}
        refused: dict[str, BaseException] = {}
        first_error: BaseException | None = None
        for unit, cause in failures:
            text = str(cause)
            if text.startswith("SRGAP") and isinstance(unit, _Block):  # an earlier block missing
                gaps.setdefault(unit.key, int(text.split()[1]))
            elif text.startswith("SRMISSING"):  # a piece SET failed: its error says why
                continue
            elif text.startswith(("SRSCHEMA", "SRCONFLICT")) or not is_transient(
                _translate(cause, self._where)
            ):
                if isinstance(unit, _Block):
                    refused.setdefault(unit.key, cause)
                else:  # an index or attrs write the server refuses for good
                    unit.done = True
                    self._problems.append(_translate(cause, self._where))
            elif first_error is None:
                first_error = cause
        for key, cause in refused.items():
            self._refuse(key, cause)
        resynced = False
        for key, last in gaps.items():
            state = self._series[key]
            if key in refused or last >= state.acked:
                continue  # a gap behind a block that failed in this round: wait for it
            # the server is behind what it acknowledged: it lost this writer's blocks
            self._lost[key] = f"series {key!r} lost blocks {last + 1}..{state.acked}"
            self._restart_series(key)
            resynced = True
        if first_error is None:
            if resynced or refused or self._problems or self._restart_pending:
                return None
            first_error = failures[0][1]
        error = _translate(first_error, self._where)
        if isinstance(error, SimRecorderError):
            pending = sum(not unit.done for unit in self._queue)
            error = type(error)(f"{error} ({pending} queued unit(s) of {self!r} are kept)")
        error.__cause__ = first_error
        return error

    def _refuse(self, key: str, cause: BaseException) -> None:
        """Take every queued unit of ``key`` out: the server will never take them."""
        text = str(cause)
        if text.startswith("SRSCHEMA"):
            error: BaseException = SchemaError(
                f"key {key!r} in {self!r}: another writer stored it as {text.split(' ', 1)[1]}"
            )
        elif text.startswith("SRCONFLICT"):
            error = KeyConflictError(f"key {key!r} in {self!r} is a {text.split()[-1]}")
        else:
            error = _translate(cause, self._where)
        for unit in self._queue:
            if unit.key == key and not unit.done:
                unit.done = True
                if isinstance(unit, _Block):
                    self._rejected.append((key, unit.spec, unit.block, error))
        self._indexed.discard(key)
        self._series[key] = _Series(uuid.uuid4().hex)

    def _restart_series(self, key: str) -> None:
        """Number ``key``'s queued blocks afresh under a new identity, and index it again."""
        self._series[key] = _Series(uuid.uuid4().hex)
        for unit in self._queue:
            if isinstance(unit, _Block) and unit.key == key and not unit.done:
                unit.sent = False
        self._queue.append(self._index_unit(key))

    def _check_server(self) -> None:
        """After a reconnect, or when the attrs hash was gone: did the server restart?"""
        try:
            run_ids = self._server_run_ids()
            self._seen_connects = self._connects.count
            if run_ids != self._run_ids or self._restart_pending:
                self._recover(run_ids)
        except _REDIS_ERRORS as exc:
            raise _translate(exc, self._where) from exc

    def _recover(self, run_ids: set[str]) -> None:
        """Write attrs, index and groups again; find series whose earlier data is gone."""
        self._restart_pending = True
        keys = sorted(self._indexed | set(self._series) | self._values | self._had_data)
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(self._k(key, "m"), "node")
            state = self._series.get(key)
            pipe.hget(self._k(key, "w"), state.ident if state else "")
        replies = pipe.execute()
        attrs = dict(self._provenance(), **self._own_attrs)
        units = [_Fixed(None, [("hsetnx", (self._attrs_key, n, v)) for n, v in attrs.items()])]
        for i, key in enumerate(keys):
            node, last = replies[2 * i], int(replies[2 * i + 1] or 0)
            state = self._series.get(key)
            queued = any(not u.done and u.key == key for u in self._queue)
            if node is None and key in self._values:
                self._lost[key] = f"value {key!r} is gone"
                self._values.discard(key)
            elif node is None and key in self._had_data:
                self._lost[key] = f"series {key!r} is gone"
            if state is not None and state.acked > last:
                self._lost[key] = f"series {key!r} lost blocks {last + 1}..{state.acked}"
                self._restart_series(key)
                queued = True
            if key in self._indexed:
                if node is not None or queued:
                    units.append(self._index_unit(key))
                else:
                    self._indexed.discard(key)
            if node is None:
                self._had_data.discard(key)
        self._queue[:0] = units
        self._run_ids = run_ids
        self._restart_pending = False

    def _index_unit(self, key: str) -> _Fixed:
        commands: list[tuple[str, tuple[Any, ...]]] = [("sadd", (self._index_key, key))]
        groups = parent_keys(key)
        if groups:
            commands.append(("sadd", (self._groups_key, *groups)))
        return _Fixed(key, commands)

    def _sync(self, key: str | None) -> None:
        """Send the queue before a read; raise only if what the read needs is not sent."""
        if not self._queue or self.read_only:
            return
        try:
            self._send()
        except SimRecorderError:
            for unit in self._queue:
                if not unit.done and (unit.key == key if key else isinstance(unit, _Fixed)):
                    raise

    # -- nodes --------------------------------------------------------------------------
    def _queued_node(self, key: str) -> NodeType | None:
        """What the queue will make of ``key`` (a read sees its own queued writes)."""
        node = None
        below = key + "/"
        for unit in self._queue:
            if isinstance(unit, _Block) and not unit.done:
                if unit.key == key:
                    return "series"
                if unit.key.startswith(below):
                    node = "group"
        return node

    def node_type(self, key: str) -> NodeType | None:
        # docstring inherited
        self._check_open(key)
        node = self._call("hget", self._k(key, "m"), "node")
        if node is not None:
            return node.decode()
        queued = self._queued_node(key)
        if queued is not None:
            return queued
        if self._call("sismember", self._groups_key, key):
            return "group"
        return None

    def series_spec(self, key: str) -> SeriesSpec | None:
        # docstring inherited
        self._check_open(key)
        node, kind, dtype, shape = self._call(
            "hmget", self._k(key, "m"), "node", "kind", "dtype", "shape"
        )
        if node is None:
            for unit in self._queue:
                if isinstance(unit, _Block) and unit.key == key and not unit.done:
                    return unit.spec
            return None
        if node != b"series":
            return None
        if kind == b"dense":
            return SeriesSpec(DENSE, np.dtype(dtype.decode()), tuple(json.loads(shape)))
        return SeriesSpec(kind.decode())

    def _count(self, key: str) -> int:
        self._sync(key)
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
        if not len(block):
            return
        if self._queued_bytes >= self.max_queued_bytes:
            try:
                self._send()
            except SimRecorderError:
                if self._queued_bytes >= self.max_queued_bytes:
                    raise  # nothing taken: the caller keeps the block
        if spec.kind == DENSE:  # no copy: the block is sent before the caller's next step
            payload: Any = dense_view(spec, block)
            dtype, shape = stored_dtype(spec).str, json.dumps(list(spec.dense_shape))
        else:
            payload = encode_block(spec, block)
            dtype, shape = "", ""
        unit = _Block(key, spec, block, self._pieces(payload), dtype, shape, len(payload))
        units: list[_Unit] = [unit]
        if key not in self._indexed:
            units.append(self._index_unit(key))
        self._queue.extend(units)  # the commit point: one call, so all or nothing
        self._indexed.add(key)
        self._queued_bytes += unit.nbytes

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
        """The block index of a series: the cumulative rows at the end of each block,
        and the cumulative pieces before each block and at the end (one more item)."""
        ends, pieces = [], [0]
        for item in self._call("lrange", self._k(key, "e"), 0, -1):
            r, p = item.split(b":")
            ends.append(int(r))
            pieces.append(int(p))
        return ends, pieces

    def _read_rows(self, key: str, spec: SeriesSpec, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a dense series, fetching only the blocks they span."""
        self._check_open(key)
        self._sync(key)
        ends, pieces = self._ends(key) if stop > start else ([], [0])
        stop = min(stop, ends[-1] if ends else 0)
        if stop <= start:
            return np.empty((0, *spec.dense_shape), dtype=spec.dense_dtype)
        first, last, row = block_span(ends, start, stop)
        data = self._fetch(key, pieces[first], pieces[last + 1] - 1)
        where = f"series {key!r} (blocks {first}..{last}) in {self!r}"
        out = join_dense_blocks(data, ends[last] - row, spec, where)
        return out[start - row : stop - row]

    def get_all(self, key: str) -> Any:
        # docstring inherited
        self._check_open(key)
        self._sync(key)
        spec = self.series_spec(key)
        if spec is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        if spec.kind == DENSE:
            return RedisView(self, key, spec)
        _, pieces = self._ends(key)
        data = self._fetch(key, 0, -1)
        items: list[Any] = []
        for n, (lo, hi) in enumerate(itertools.pairwise(pieces)):
            where = f"block {n} of series {key!r} in {self!r}"
            items.extend(decode_block(spec, b"".join(data[lo:hi]), where))
        return items

    # -- single values ------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        # docstring inherited
        validate_key(key)
        self._check_writable(key)
        check_key_free(self, key, "value")
        payload = _codec.encode_for(key, value)
        pipe = self._redis.pipeline(transaction=self._transactional)
        pipe.delete(self._k(key, "v"))
        pipe.rpush(self._k(key, "v"), *self._pieces(payload))
        pipe.hset(self._k(key, "m"), mapping={"node": "value"})
        pipe.sadd(self._index_key, key)
        groups = parent_keys(key)
        if groups:
            pipe.sadd(self._groups_key, *groups)
        try:
            pipe.execute()
        except _REDIS_ERRORS as exc:
            raise _translate(exc, self._where) from exc
        finally:
            pipe.reset()
        self._values.add(key)
        self._indexed.add(key)

    def _get_value(self, key: str) -> Any:
        # docstring inherited
        return _codec.decode(b"".join(self._call("lrange", self._k(key, "v"), 0, -1)))

    def keys(self, prefix: str = "") -> list[str]:
        # docstring inherited
        self._check_open()
        self._sync(None)
        names = [name.decode() for name in self._call("smembers", self._index_key)]
        if prefix:
            names = [k for k in names if k == prefix or k.startswith(prefix + "/")]
        return sorted(names)

    # -- series attributes (Recorder.describe) ------------------------------------------
    def _described(self, key: str) -> str:
        """The attributes hash of the series ``key`` (its blocks sent first), which
        shares the series' hash tag and so its cluster slot."""
        self._sync(key)
        if self._call("hget", self._k(key, "m"), "node") != b"series":
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        return self._k(key, "a")

    def set_series_attrs(self, key: str, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into the series' attributes hash (one ``HSET``; values as
        JSON text, so redis-cli shows them)."""
        self._check_writable(key)
        mapping = {name: json.dumps(jsonable(v), default=repr) for name, v in attrs.items()}
        name = self._described(key)
        if mapping:
            self._call("hset", name, mapping=mapping)

    def series_attrs(self, key: str) -> dict[str, Any]:
        # docstring inherited
        self._check_open(key)
        raw = self._call("hgetall", self._described(key))
        return {name.decode(): json.loads(value) for name, value in raw.items()}

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
            self._own_attrs.update(mapping)


class RedisClusterDataStore(RedisDataStore):
    """:class:`RedisDataStore` on a Redis Cluster (``redis+cluster://host:port``).

    Every key of a series carries the hash tag ``{n:prefix/key}``, so a series lives
    on one node and its Lua commit stays atomic; different series spread over the
    nodes. A flush is one pipeline but *not* a transaction (a transaction cannot span
    hash slots): when a node is away, the blocks of the other nodes are stored and
    those of the missing node stay queued until it is back.
    """

    protocol = "redis+cluster"
    _transactional = False

    def __init__(self, server_host: str = "localhost", redis_port: int = 6379, **kwargs: Any):
        db = kwargs.pop("db", 0)
        if db not in (0, "0"):  # redis-py refuses it too, less clearly
            raise InvalidArgumentError(
                f"a Redis Cluster has only database 0; got db={db!r} for {server_host}:{redis_port}"
            )
        super().__init__(server_host, redis_port, **kwargs)

    def _server_run_ids(self) -> set[str]:
        from redis.cluster import RedisCluster

        found = self._redis.info("server", target_nodes=RedisCluster.PRIMARIES)
        if "run_id" in found:
            return {str(found["run_id"])}
        return {str(info["run_id"]) for info in found.values()}

    @property
    def url(self) -> str:
        # docstring inherited
        scheme = "rediss+cluster" if self.ssl else "redis+cluster"
        user = f"{quote(self.username)}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}?prefix={quote(self.prefix)}"


_STORES: weakref.WeakSet[RedisDataStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- runs on a server ---------------------------------------------------------------------------
def _valid_prefix(prefix: str) -> bool:
    return bool(prefix) and not any(c in prefix for c in "{}\x00")


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _run_patterns(prefix: str) -> list[str]:
    """MATCH patterns of every key of the run at ``prefix`` in format 2 (its root keys
    and its series keys). The length in front makes them exact: ``exp`` matches
    neither ``exp/b`` (``sr2:{5:exp/b``) nor ``expx`` (``sr2:{4:expx``)."""
    base = _glob_escape(f"sr2:{{{len(prefix)}:{prefix}")
    return [base + "}:*", base + "/*"]


def _run_exists(client: Any, prefix: str) -> bool:
    """Does ``prefix`` hold a run (its attrs hash or index, format 2 or 1)?"""
    base2, base1 = f"sr2:{{{len(prefix)}:{prefix}}}", f"sr:{{{prefix}}}"
    return any(client.exists(f"{base}:{name}") for base in (base2, base1)
               for name in ("attrs", "index"))  # fmt: skip


def _scan(client: Any, pattern: str) -> Iterator[bytes]:
    return client.scan_iter(match=pattern, count=1000)


def _unlink(client: Any, names: list[bytes]) -> int:
    """UNLINK ``names`` in one pipeline (one key per command: fine on a cluster)."""
    if not names:
        return 0
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.unlink(name)
    try:
        return sum(int(n) for n in pipe.execute())
    finally:
        pipe.reset()


def _delete_run(client: Any, prefix: str, batch: int = 1000) -> int:
    """Delete every key of the run at ``prefix`` in batches (SCAN + UNLINK, never
    ``FLUSHDB``); return how many were deleted.

    The attrs hashes go last: a deletion interrupted half-way leaves a run that still
    exists (and is deleted by the next try), never keys of a run that seems gone.
    """
    base2, base1 = f"sr2:{{{len(prefix)}:{prefix}}}", f"sr:{{{prefix}}}"
    last = {f"{base2}:attrs".encode(), f"{base1}:attrs".encode()}
    # format 1 could not tell "exp" key "b/x" from "exp/b" key "x": delete only the
    # series its own index lists (and its root keys)
    legacy = {name.decode() for name in client.smembers(f"{base1}:index")}
    legacy_base = f"sr:{{{prefix}/".encode()
    patterns = [*_run_patterns(prefix), _glob_escape(base1) + ":*"]
    if legacy:
        patterns.append(_glob_escape(f"sr:{{{prefix}/") + "*")
    deleted = 0
    for pattern in patterns:
        names: list[bytes] = []
        for name in _scan(client, pattern):
            if name in last:
                continue
            if name.startswith(legacy_base):
                key = name[len(legacy_base) :].rsplit(b"}:", 1)[0].decode(errors="replace")
                if key not in legacy:
                    continue
            names.append(name)
            if len(names) >= batch:
                deleted += _unlink(client, names)
                names = []
        deleted += _unlink(client, names)
    return deleted + _unlink(client, sorted(last))


def _server_of(url: str) -> tuple[Any, str]:
    parsed = parse_redis_url(url)
    return client_from_url(url), f"{parsed.host}:{parsed.port}"


def list_redis_runs(url: str) -> list[str]:
    """The prefixes of the simrecorder runs on a Redis server (or cluster) and database.

    Parameters
    ----------
    url
        ``redis://host:port/db`` or ``redis+cluster://host:port`` (options as for
        :meth:`RedisDataStore.from_url`; a ``prefix`` in it is ignored).

    Returns
    -------
    list of str
        Sorted prefixes; pass one as ``?prefix=`` to open its run.

    Raises
    ------
    StoreConnectionError
        The server cannot be reached (the message names ``host:port``).

    Examples
    --------
    >>> list_redis_runs("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    ['exp', 'exp/b', 'simrecorder']
    """
    client, where = _server_of(url)
    try:
        candidates: dict[bytes, str] = {}
        for name in _scan(client, "sr2:{*}:attrs"):  # sr2:{<n>:<prefix>}:attrs
            length, _, prefix = name[5:-7].decode(errors="replace").partition(":")
            if length.isdigit() and int(length) == len(prefix) and _valid_prefix(prefix):
                candidates[name] = prefix
        for name in _scan(client, "sr:{*}:attrs"):  # format 1: sr:{<prefix>}:attrs
            prefix = name[4:-7].decode(errors="replace")
            if _valid_prefix(prefix):
                candidates[name] = prefix
        pipe = client.pipeline(transaction=False)
        names = list(candidates)
        for name in names:
            pipe.hexists(name, "simrecorder_format")
        try:
            marked = pipe.execute()
        finally:
            pipe.reset()
        return sorted({candidates[name] for name, ok in zip(names, marked, strict=True) if ok})
    except _REDIS_ERRORS as exc:
        raise _translate(exc, where) from exc
    finally:
        client.close()


def delete_redis_run(url: str) -> int:
    """Delete the run at the URL's prefix: its keys only, in batches (``SCAN`` +
    ``UNLINK``; never ``FLUSHDB``), as ``mode='w'`` does before writing.

    Parameters
    ----------
    url
        ``redis://host:port/db?prefix=P`` (or ``redis+cluster://``); the prefix is
        required. Runs at other prefixes, also nested ones (``P/b``), stay.

    Returns
    -------
    int
        How many Redis keys were deleted.

    Raises
    ------
    InvalidArgumentError
        The URL names no prefix.
    StoreNotFoundError
        No run at that prefix.
    StoreConnectionError
        The server cannot be reached.
    """
    parsed = parse_redis_url(url)
    if parsed.prefix is None:
        raise InvalidArgumentError(
            f"delete_redis_run needs the run's prefix in the URL (?prefix=...); "
            f"got {redact(url)!r} (list_redis_runs lists them)"
        )
    client, where = _server_of(url)
    try:
        if not _run_exists(client, parsed.prefix):
            raise StoreNotFoundError(f"no simrecorder run at prefix {parsed.prefix!r} on {where}")
        return _delete_run(client, parsed.prefix)
    except _REDIS_ERRORS as exc:
        raise _translate(exc, where) from exc
    finally:
        client.close()

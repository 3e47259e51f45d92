"""One way to talk to Redis: the client factory, its retry policy, URL parsing and the
translation of redis-py's exceptions into simrecorder's.

Every part of simrecorder that opens a Redis connection goes through
:func:`make_client` (or :func:`client_from_url`), so one server sees one set of
defaults: a 5 s connect timeout, a 60 s socket timeout and three retries with a capped
exponential backoff (a recorder wants a quick, clear error it can keep its blocks
through; they are sent again by the next flush anyway).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry

from .errors import (
    AuthenticationFailedError,
    InvalidArgumentError,
    SimRecorderError,
    StoreConnectionError,
    StoreFormatError,
    StoreFullError,
    StoreWriteError,
)

__all__ = [
    "REDIS_ERRORS",
    "RedisURL",
    "check_port",
    "client_defaults",
    "client_from_url",
    "make_client",
    "parse_redis_url",
    "probe",
    "redact",
    "translate",
]

#: The exceptions redis-py raises (``translate`` turns them into simrecorder's).
REDIS_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)

#: Query options of a Redis URL that are simrecorder's, not redis-py's.
OWN_OPTIONS = ("prefix", "mode")

# error replies that say "not now": the node is away, loading, failing over or moving
_UNAVAILABLE = frozenset(
    {"CLUSTERDOWN", "TRYAGAIN", "LOADING", "READONLY", "MASTERDOWN", "MOVED", "ASK", "BUSY",
     "NOREPLICAS"}
)  # fmt: skip


def client_defaults() -> dict[str, Any]:
    """The options every simrecorder Redis client starts from (a new ``Retry`` each
    call: redis-py's retry objects are not shared between clients)."""
    return {
        "socket_connect_timeout": 5,
        "socket_timeout": 60,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
    }


def check_port(port: object) -> int:
    """Return ``port`` as an int, or raise :class:`InvalidArgumentError` naming it.

    Accepts ints and strings of digits from 1 to 65535.
    """
    value: int | None = None
    if isinstance(port, int) and not isinstance(port, bool):
        value = port
    elif isinstance(port, str) and port.strip().isdigit():
        value = int(port)
    if value is None or not 1 <= value <= 65535:
        raise InvalidArgumentError(f"Redis port must be an integer from 1 to 65535; got {port!r}")
    return value


def _accepted_options(cluster: bool) -> frozenset[str]:
    names = set(inspect.signature(redis.Redis.__init__).parameters)
    if cluster:
        from redis.cluster import REDIS_ALLOWED_KEYS, RedisCluster

        names = set(inspect.signature(RedisCluster.__init__).parameters) | set(REDIS_ALLOWED_KEYS)
    return frozenset(names - {"self", "kwargs", "host", "port", "url"})


def make_client(
    host: str,
    port: int | str,
    *,
    cluster: bool = False,
    db: int = 0,
    on_connect: Callable[[Any], None] | None = None,
    **options: Any,
) -> Any:
    """A redis-py client (``redis.Redis`` or ``redis.cluster.RedisCluster``) with
    simrecorder's defaults (:func:`client_defaults`), which ``options`` override.

    Parameters
    ----------
    host, port
        The server (for a cluster: any node).
    cluster
        Make a ``RedisCluster`` client.
    db
        Database number; a cluster has only database 0.
    on_connect
        Called with each new connection after it is set up (authenticated, database
        selected): counting connections tells a reconnect.
    **options
        redis-py client options (``password``, ``ssl``, ``socket_timeout``, ...).

    Raises
    ------
    InvalidArgumentError
        A bad port, ``db`` other than 0 on a cluster, or an option redis-py does not know.
    """
    port = check_port(port)
    try:
        db = int(db)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"Redis db must be an integer; got {db!r}") from None
    unknown = sorted(set(options) - _accepted_options(cluster))
    if unknown:
        kind = "redis.cluster.RedisCluster" if cluster else "redis.Redis"
        raise InvalidArgumentError(
            f"unknown Redis option(s) {', '.join(map(repr, unknown))} for {host}:{port}: "
            f"not an argument of {kind} (simrecorder's own URL options: "
            f"{', '.join(OWN_OPTIONS)})"
        )
    settings = client_defaults()
    settings.update(options)
    if cluster:
        if db != 0:
            raise InvalidArgumentError(
                f"a Redis Cluster has only database 0; got db={db} for {host}:{port}"
            )
        from redis.cluster import RedisCluster

        if on_connect is not None:  # RedisCluster sets the connection up itself first
            settings["redis_connect_func"] = on_connect
        try:
            return RedisCluster(host=host, port=port, **settings)
        except REDIS_ERRORS as exc:
            raise translate(exc, f"{host}:{port}") from exc
    if on_connect is not None:
        user_hook = on_connect

        def connected(connection: Any) -> None:
            connection.on_connect()
            user_hook(connection)

        settings["redis_connect_func"] = connected
    return redis.Redis(host=host, port=port, db=db, **settings)


@dataclass
class RedisURL:
    """A Redis URL taken apart: where the server is, simrecorder's own options and
    redis-py's (with their types coerced by redis-py's own URL parser)."""

    host: str
    port: int
    db: int
    cluster: bool
    ssl: bool
    username: str | None = None
    password: str | None = None
    prefix: str | None = None
    mode: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def redact(url: str) -> str:
    """``url`` without its password (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = quote(parts.username or "")
    netloc = f"{user}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def parse_redis_url(url: str) -> RedisURL:
    """Take a ``redis://``, ``rediss://``, ``redis+cluster://`` or ``rediss+cluster://``
    URL apart with redis-py's parser (``redis.connection.parse_url``): every query
    option redis-py knows keeps its type (``?socket_timeout=5`` is the float 5.0);
    ``prefix`` and ``mode`` are simrecorder's.

    Raises
    ------
    InvalidArgumentError
        Another scheme, a bad port or option value, ``db`` other than 0 on a cluster.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        raise InvalidArgumentError(
            f"not a Redis URL: {redact(url)!r} (use redis://, rediss://, redis+cluster:// "
            "or rediss+cluster://)"
        )
    cluster = scheme.endswith("+cluster")
    ssl = scheme.startswith("rediss")
    try:
        urlsplit(url).port  # noqa: B018 - raises for a port that is no number or too large
    except ValueError as exc:
        raise InvalidArgumentError(
            f"bad Redis URL {redact(url)!r}: the port must be an integer from 1 to 65535 ({exc})"
        ) from None
    try:
        found = parse_url(f"{'rediss' if ssl else 'redis'}://{rest}")
    except ValueError as exc:  # a bad port, or an option value of the wrong type
        raise InvalidArgumentError(f"bad Redis URL {redact(url)!r}: {exc}") from None
    if found.pop("connection_class", None) is SSLConnection:
        ssl = True
    parsed = RedisURL(
        host=found.pop("host", "localhost"),
        port=check_port(found.pop("port", 6379)),
        db=found.pop("db", 0),
        cluster=cluster,
        ssl=ssl,
        username=found.pop("username", None),
        password=found.pop("password", None),
        prefix=found.pop("prefix", None),
        mode=found.pop("mode", None),
        options=found,
    )
    if cluster and parsed.db != 0:
        raise InvalidArgumentError(
            f"a Redis Cluster has only database 0; got db {parsed.db} in {redact(url)!r}"
        )
    return parsed


def probe(host: str, port: int, *, db: int = 0, **options: Any) -> None:
    """Send one ``PING`` to ``host:port``, waiting for the reply no longer than the
    connect timeout (5 s by default) and retrying once.

    A store checks its server this way when it opens: a port where nothing listens
    fails at once, and one where a service other than Redis listens (or nothing
    answers) within seconds, instead of after the 60 s socket timeout of every retry.
    ``options`` are redis-py's (credentials, TLS, timeouts); ``socket_connect_timeout
    =None`` (no time limit) skips the check.

    Raises
    ------
    StoreConnectionError
        No answer in time, a refused connection, or an answer that is not Redis'.
    AuthenticationFailedError
        The server refused the credentials.
    """
    settings = {name: value for name, value in options.items() if name in _accepted_options(False)}
    limit = settings.get("socket_connect_timeout", client_defaults()["socket_connect_timeout"])
    if limit is None:
        return
    reply = settings.get("socket_timeout")
    limit = limit if reply is None else min(limit, reply)
    settings.update(socket_connect_timeout=limit, socket_timeout=limit)
    settings["retry"] = Retry(NoBackoff(), 1)
    client = make_client(host, port, db=db, **settings)
    try:
        client.ping()
    except redis.exceptions.TimeoutError as exc:
        raise StoreConnectionError(
            f"Redis at {host}:{port} did not answer a PING within {limit:g} s ({exc}): is "
            "the port right, and is it redis-server that listens there?"
        ) from exc
    except REDIS_ERRORS as exc:
        raise translate(exc, f"{host}:{port}") from exc
    finally:
        client.close()


def client_from_url(url: str, **options: Any) -> Any:
    """A client for the server a Redis URL names (see :func:`parse_redis_url`); its
    ``prefix`` and ``mode`` are ignored, ``options`` override the URL's."""
    parsed = parse_redis_url(url)
    settings: dict[str, Any] = dict(parsed.options)
    if parsed.ssl:
        settings["ssl"] = True
    if parsed.username is not None:
        settings["username"] = parsed.username
    if parsed.password is not None:
        settings["password"] = parsed.password
    settings.update(options)
    return make_client(parsed.host, parsed.port, cluster=parsed.cluster, db=parsed.db, **settings)


def translate(exc: BaseException, where: str) -> BaseException:
    """redis-py's exceptions as simrecorder's, naming the server ``where``.

    Transient conditions become :class:`StoreConnectionError` (server away, cluster
    down, loading, failing over, a server that does not speak Redis: a wrong port)
    or :class:`StoreFullError` (``maxmemory``, a failing save); anything else from
    redis-py becomes :class:`StoreWriteError`. Exceptions that are not redis-py's are
    returned unchanged.
    """
    if isinstance(exc, SimRecorderError) or not isinstance(exc, REDIS_ERRORS):
        return exc
    text = str(exc)
    code = text.split(" ", 1)[0]
    refused = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
    if isinstance(exc, refused) or code in ("NOAUTH", "WRONGPASS", "NOPERM"):
        return AuthenticationFailedError(
            f"Redis at {where} refused the credentials ({exc}): check password= / username="
        )
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or code == "OOM" or "maxmemory" in text:
        return StoreFullError(
            f"Redis at {where} is full ({exc}): free memory or raise maxmemory; "
            "the blocks are kept and sent again by the next flush()"
        )
    if code == "MISCONF":
        return StoreFullError(
            f"Redis at {where} cannot save to its disk ({exc}): is the disk full? "
            "The blocks are kept and sent again by the next flush()"
        )
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return StoreConnectionError(
            f"the server at {where} does not answer like a Redis server ({exc}): is the "
            "port right? (another service may listen there)"
        )
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError) and not (
        isinstance(exc, redis.exceptions.BusyLoadingError)
    ):
        return StoreConnectionError(
            f"cannot reach Redis at {where}: {exc}. Is redis-server running there? "
            "(simrecorder.RedisServer(data_directory) starts one)"
        )
    unavailable = (
        redis.exceptions.BusyLoadingError,
        redis.exceptions.ClusterError,
        redis.exceptions.RedisClusterException,
        redis.exceptions.ReadOnlyError,
        redis.exceptions.TryAgainError,
        redis.exceptions.AskError,
    )
    if isinstance(exc, unavailable) or code in _UNAVAILABLE:
        return StoreConnectionError(
            f"Redis at {where} cannot take writes now ({type(exc).__name__}: {exc}); "
            "the blocks are kept and sent again by the next flush()"
        )
    if code == "WRONGTYPE":
        return StoreFormatError(f"Redis at {where}: a key holds another type than expected ({exc})")
    return StoreWriteError(f"Redis at {where} failed: {type(exc).__name__}: {exc}")

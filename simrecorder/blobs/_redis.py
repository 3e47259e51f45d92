"""tarn's ``RedisLocation``: the layer's Redis location with tarn's arguments."""

from __future__ import annotations

from typing import Any

from ..locations import RedisLocation as _RedisLocation

__all__ = ["RedisLocation"]


class RedisLocation(_RedisLocation):
    """Blobs as Redis strings (one ``GET`` per read), with tarn's arguments.

    Parameters
    ----------
    host
        A host name, a ``redis://host:port/db`` URL (``rediss://``, ``unix://``,
        ``redis+cluster://host:port`` too), or a ``redis.Redis`` or
        ``redis.cluster.RedisCluster`` client.
    port
        The port, when ``host`` is a host name.
    prefix
        Namespace of the keys (``<prefix>/ab/cdef...``; on a Redis Cluster each key is
        its own hash tag, ``{<prefix>/ab/cdef...}``).
    db
        Database number, when ``host`` is a host name (0 on a cluster).
    cluster
        ``host:port`` is a node of a Redis Cluster (when ``host`` is a host name).
    **options
        redis-py client options (``password``, ``socket_timeout``...) and the layer's
        ``max_value_bytes`` and ``read_only``.

    Examples
    --------
    >>> RedisLocation("localhost", 6390, prefix="blobs").url
    'redis://localhost:6390/0/blobs'

    On a Redis Cluster (any node; the client finds the others):
    ``RedisLocation("localhost", 7000, prefix="blobs", cluster=True)``.
    """

    def __init__(
        self,
        host: Any = "localhost",
        port: int = 6379,
        prefix: str = "",
        db: int = 0,
        cluster: bool = False,
        **options: Any,
    ) -> None:
        if isinstance(host, str) and "://" not in host:
            scheme = "redis+cluster" if cluster else "redis"
            host = f"{scheme}://{host}:{int(port)}/{int(db)}"
        super().__init__(host, prefix=prefix, **options)

    def __reduce__(self) -> tuple[Any, ...]:
        # the layer's own pickling (credentials kept), then this class again: it adds no
        # state of its own, only tarn's constructor arguments
        restore, arguments = super().__reduce__()[:2]
        return (_restore_redis, (type(self), restore, arguments))


def _restore_redis(
    cls: type[RedisLocation], restore: Any, arguments: tuple[Any, ...]
) -> RedisLocation:
    location = restore(*arguments)
    location.__class__ = cls
    return location

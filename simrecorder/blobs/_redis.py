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
        A host name, a ``redis://host:port/db`` URL (``rediss://``, ``unix://`` too),
        or a ``redis.Redis`` client.
    port
        The port, when ``host`` is a host name.
    prefix
        Namespace of the keys (``<prefix>/ab/cdef...``).
    db
        Database number, when ``host`` is a host name.
    **options
        redis-py client options (``password``, ``socket_timeout``...) and the layer's
        ``max_value_bytes`` and ``read_only``.

    Examples
    --------
    >>> RedisLocation("localhost", 6390, prefix="blobs").url
    'redis://localhost:6390/0/blobs'
    """

    def __init__(
        self,
        host: Any = "localhost",
        port: int = 6379,
        prefix: str = "",
        db: int = 0,
        **options: Any,
    ) -> None:
        if isinstance(host, str) and "://" not in host:
            host = f"redis://{host}:{int(port)}/{int(db)}"
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

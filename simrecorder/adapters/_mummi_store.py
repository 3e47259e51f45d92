"""The MuMMI namespace backends as Recorder DataStores (``mummi+simple://dir``, ...).

Layout inside the namespace, for a series ``K``: ``K/.series.json`` (kind, dtype,
shape, count and rows per block) and one key per block, ``K/.block-<n>`` (raw
little-endian rows for dense series, a codec-encoded list otherwise); a value from
``set`` is ``K/.value`` (codec-encoded); store metadata ``.simrecorder-attrs.json``.
Blocks are written before the metadata that counts them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import numpy as np

from .. import _codec
from .._keys import validate_key
from .._provenance import provenance
from .._schema import DENSE, SeriesSpec
from ..datastores.base import DataStore, NodeType, check_key_free
from ..errors import KeyNotFoundError, SchemaError
from .mummi import NamespaceIO, RedisIO, SimpleIO, TaridxIO

__all__ = ["NamespaceDataStore", "RedisNamespaceDataStore", "SimpleDataStore", "TaridxDataStore"]

_META = ".series.json"
_VALUE = ".value"
_ATTRS = ".simrecorder-attrs.json"


class NamespaceDataStore(DataStore):
    """A DataStore on a MuMMI namespace (any :class:`NamespaceIO`)."""

    persistent = True

    def __init__(self, io: NamespaceIO, namespace: str) -> None:
        super().__init__()
        self.io = io
        self.namespace = namespace
        self._meta: dict[str, dict[str, Any]] = {}
        if not io.file_exists(namespace, _ATTRS):
            info = provenance()
            info["simrecorder_format"] = 1
            io.save_files(namespace, _ATTRS, json.dumps(info).encode())

    def _close(self) -> None:
        self._meta.clear()

    def flush(self) -> None:
        # docstring inherited: every append is written at once
        self._check_open()

    def _series_meta(self, key: str) -> dict[str, Any] | None:
        meta = self._meta.get(key)
        if meta is None:
            raw = self.io.load_files(self.namespace, [f"{key}/{_META}"])[0]
            if raw is None:
                return None
            meta = self._meta[key] = json.loads(raw)
        return meta

    def node_type(self, key: str) -> NodeType | None:
        # docstring inherited
        self._check_open(key)
        if self._series_meta(key) is not None:
            return "series"
        if self.io.file_exists(self.namespace, f"{key}/{_VALUE}"):
            return "value"
        if self.io.list_keys(self.namespace, f"{key}/*"):
            return "group"
        return None

    def series_spec(self, key: str) -> SeriesSpec | None:
        # docstring inherited
        self._check_open(key)
        meta = self._series_meta(key)
        return None if meta is None else SeriesSpec.from_attrs(meta)

    def append_block(self, key: str, spec: SeriesSpec, block: Any) -> None:
        # docstring inherited
        self._check_writable(key)
        if not len(block):
            return
        meta = self._series_meta(key) or {**spec.to_attrs(), "count": 0, "blocks": []}
        if spec.kind == DENSE:
            payload = np.ascontiguousarray(block, dtype=spec.dtype.newbyteorder("<")).tobytes()
        else:
            payload = _codec.encode(list(block))
        n = len(meta["blocks"])
        self.io.save_files(self.namespace, f"{key}/.block-{n}", payload)
        meta = {
            **meta,
            "count": meta["count"] + len(block),
            "blocks": [*meta["blocks"], len(block)],
        }
        self.io.save_files(self.namespace, f"{key}/{_META}", json.dumps(meta).encode())
        self._meta[key] = meta

    def get_all(self, key: str) -> Any:
        # docstring inherited
        self._check_open(key)
        meta = self._series_meta(key)
        if meta is None:
            raise KeyNotFoundError(f"no series {key!r} in {self!r}")
        spec = SeriesSpec.from_attrs(meta)
        names = [f"{key}/.block-{i}" for i in range(len(meta["blocks"]))]
        blocks = self.io.load_files(self.namespace, names)
        if spec.kind == DENSE:
            data = b"".join(blocks)
            flat = np.frombuffer(data, dtype=spec.dtype.newbyteorder("<")).astype(spec.dtype)
            return flat.reshape(meta["count"], *spec.shape)
        items = [item for block in blocks for item in _codec.decode(block)]
        return items if spec.kind != "object" else [_codec.decode(i) for i in items]

    def set(self, key: str, value: Any) -> None:
        # docstring inherited
        validate_key(key)
        self._check_writable(key)
        check_key_free(self, key, "value")
        try:
            payload = _codec.encode(value)
        except SchemaError as exc:
            raise SchemaError(f"key {key!r}: {exc}") from None
        self.io.save_files(self.namespace, f"{key}/{_VALUE}", payload)

    def _get_value(self, key: str) -> Any:
        # docstring inherited
        return _codec.decode(self.io.load_files(self.namespace, f"{key}/{_VALUE}"))

    def keys(self, prefix: str = "") -> list[str]:
        # docstring inherited
        self._check_open()
        found = set()
        for name in self.io.list_keys(self.namespace, "*"):
            for marker in (f"/{_META}", f"/{_VALUE}"):
                if name.endswith(marker):
                    found.add(name[: -len(marker)])
        if prefix:
            found = {k for k in found if k == prefix or k.startswith(prefix + "/")}
        return sorted(found)

    @property
    def attrs(self) -> dict[str, Any]:
        # docstring inherited
        self._check_open()
        return json.loads(self.io.load_files(self.namespace, _ATTRS))

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # docstring inherited
        self._check_writable()
        merged = {**self.attrs, **dict(attrs)}
        self.io.save_files(self.namespace, _ATTRS, json.dumps(merged, default=repr).encode())


class SimpleDataStore(NamespaceDataStore):
    """``mummi+simple://dir``: a namespace directory."""

    protocol = "mummi+simple"

    def __init__(self, directory: str) -> None:
        import os

        super().__init__(SimpleIO(), os.path.abspath(directory))

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SimpleDataStore:
        # docstring inherited
        return cls(url.split("://", 1)[1], **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return f"mummi+simple://{self.namespace}"


class TaridxDataStore(NamespaceDataStore):
    """``mummi+taridx://file.tar``: a tar archive with an index."""

    protocol = "mummi+taridx"

    def __init__(self, path: str) -> None:
        import os

        super().__init__(TaridxIO(), os.path.abspath(path))

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> TaridxDataStore:
        # docstring inherited
        return cls(url.split("://", 1)[1], **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return f"mummi+taridx://{self.namespace}"


class RedisNamespaceDataStore(NamespaceDataStore):
    """``mummi+redis://namespace?url=redis://host:port/db``."""

    protocol = "mummi+redis"

    def __init__(self, namespace: str, url: str | None = None) -> None:
        super().__init__(RedisIO(url), namespace)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisNamespaceDataStore:
        # docstring inherited
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        namespace = (parsed.netloc + parsed.path).strip("/")
        return cls(namespace, url=query.get("url"), **kwargs)

    @property
    def url(self) -> str:
        # docstring inherited
        return f"mummi+redis://{self.namespace}?url={quote(self.io.url, safe='')}"

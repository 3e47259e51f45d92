"""The DataStore contract every backend implements.

A backend implements a small core: :meth:`DataStore.append_block`,
:meth:`DataStore.get_all`, :meth:`DataStore.set`, :meth:`DataStore._get_value`,
:meth:`DataStore.series_spec`, :meth:`DataStore.node_type`, :meth:`DataStore.keys`,
:meth:`DataStore.flush` and the lifecycle hooks ``_open``/``_close``. This class
derives the rest (``get``, ``append``, ``__contains__``, context manager, URL identity).
Capabilities are class attributes, so callers branch on flags, never on class names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from .._keys import validate_key
from .._modes import OpenPlan
from .._schema import DENSE, SeriesSpec, infer_spec, merge_specs
from ..errors import (
    KeyConflictError,
    ReadOnlyError,
    SeriesAttrsNotSupportedError,
    StoreClosedError,
    StoreExistsError,
    ValueTooLargeError,
)

__all__ = ["DataStore", "NodeType"]


#: What a key names in a store: ``'series'``, ``'value'`` (from ``set``) or ``'group'``.
NodeType = str


class DataStore(ABC):
    """Abstract base class of all data stores.

    Blocks handed to :meth:`append_block` are owned by the store from then on: the
    recorder never touches them again, so a store may keep them without copying.

    **Who owns a block when something fails** (the rule every backend keeps):

    - ``append_block`` either *takes* the block or *raises having taken nothing*. A
      raise -- including ``KeyboardInterrupt`` or any other ``BaseException`` arriving
      in the middle -- leaves every series exactly as before the call: no rows added,
      no stored row changed. The caller still owns the block; the
      :class:`~simrecorder.Recorder` is the one layer that retries (or quarantines) it.
    - A store that queues taken blocks internally (Redis) owns them until they are
      acknowledged: it never drops a taken block, never applies one twice, and
      ``flush()`` raises on every call until the queue is delivered. While its queue
      is over its limit and cannot be sent, ``append_block`` raises (taking nothing).
    - ``flush()`` raising means: everything taken is still held; call ``flush()``
      again.
    - Failures that can go away (server away, disk or memory full) raise
      :class:`~simrecorder.errors.StoreConnectionError` or
      :class:`~simrecorder.errors.StoreFullError` (see
      :func:`~simrecorder.errors.is_transient`); anything else is permanent.

    Attributes
    ----------
    protocol
        URL scheme of the store (``'memory'``, ``'hdf5'``, ...).
    persistent
        Data outlives the process.
    supports_lazy_views
        ``get_all`` of a dense series returns a lazy view rather than an array.
    supports_concurrent_writers
        Several processes may write at once.
    max_value_bytes
        Largest single value/block the backend accepts, or ``None`` for no limit.
    retains_blocks
        The store keeps references to the arrays it is handed (so a recorder must
        copy samples it would otherwise pass through without copying).
    supports_nul_in_str
        str samples may contain NUL characters.
    supports_series_attrs
        The store keeps attributes on series (:meth:`set_series_attrs`).
    """

    protocol: ClassVar[str] = ""
    persistent: ClassVar[bool] = False
    supports_lazy_views: ClassVar[bool] = False
    supports_concurrent_writers: ClassVar[bool] = False
    max_value_bytes: ClassVar[int | None] = None
    retains_blocks: ClassVar[bool] = False
    supports_nul_in_str: ClassVar[bool] = True
    supports_series_attrs: ClassVar[bool] = False

    def __init__(self, *, read_only: bool = False) -> None:
        self._closed = False
        self._read_only = read_only
        self._existed_readonly = False

    def _apply_open_plan(self, plan: OpenPlan) -> None:
        """Adopt the read-only decision of :func:`simrecorder._modes.plan_open` (called
        by a backend once it knows whether the store exists) and, when an existing
        store is opened for writing, add a resume entry to its provenance."""
        self._read_only = plan.read_only
        self._existed_readonly = plan.existed_readonly

    def _note_resume(self) -> None:
        """Append this process' provenance to the ``simrecorder_resumes`` attribute (a
        run resumed with ``mode='a'``/``'r+'`` keeps every run's record, not only the
        first one's)."""
        from .._provenance import provenance

        entry = {
            name: value
            for name, value in provenance().items()
            if name
            in ("created", "command", "working_directory", "hostname", "git_commit", "git_dirty")
        }
        earlier = self.attrs.get("simrecorder_resumes", [])
        self.update_attrs({"simrecorder_resumes": [*list(earlier), entry]})

    # -- lifecycle ---------------------------------------------------------------------
    def storage_kind(self) -> str | None:
        """The :mod:`simrecorder.storage` backend that can live beside this store's
        series and share its file (``'hdf5'``, ``'zarr'``: ``rec.storage``), or
        ``None``."""
        return None

    @property
    def closed(self) -> bool:
        """True after :meth:`close` until the store is opened again."""
        return self._closed

    @property
    def read_only(self) -> bool:
        """True when the store refuses writes."""
        return self._read_only

    def open(self) -> None:
        """(Re)open the store; a no-op when it is open.

        A :class:`~simrecorder.Recorder` calls this for each of its stores, so a store
        closed by one recorder can be handed to the next (as SimRecorder allowed).
        """
        if self._closed:
            self._open()
            self._closed = False

    def connect(self) -> None:
        """Alias of :meth:`open`, SimRecorder's name."""
        self.open()

    def close(self) -> None:
        """Flush and release the store's resources; further use raises
        :class:`~simrecorder.errors.StoreClosedError` until :meth:`open`."""
        if not self._closed:
            try:
                self._close()
            finally:
                self._closed = True

    def _open(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Reacquire resources released by :meth:`_close` (backend hook)."""

    @abstractmethod
    def _close(self) -> None:
        """Flush and release resources (backend hook)."""

    def _check_open(self, key: str | None = None) -> None:
        if self._closed:
            where = f" (key {key!r})" if key is not None else ""
            raise StoreClosedError(f"{self!r} is closed{where}")

    def _check_writable(self, key: str | None = None) -> None:
        self._check_open(key)
        if self._existed_readonly:
            where = f" (key {key!r})" if key is not None else ""
            raise StoreExistsError(
                f"{self!r} holds an earlier run{where}: open it with mode='a' to resume "
                "that run (append to it) or mode='w' to overwrite it"
            )
        if self._read_only:
            where = f" key {key!r}" if key is not None else ""
            raise ReadOnlyError(f"{self!r} is open read-only: cannot write{where}")

    def __enter__(self) -> DataStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the core every backend implements ----------------------------------------------
    @abstractmethod
    def node_type(self, key: str) -> NodeType | None:
        """Return ``'series'``, ``'value'``, ``'group'`` or None for what ``key`` names."""

    @abstractmethod
    def series_spec(self, key: str) -> SeriesSpec | None:
        """Return the :class:`SeriesSpec` of the series at ``key``, or None if absent."""

    @abstractmethod
    def append_block(self, key: str, spec: SeriesSpec, block: Any) -> None:
        """Append a block of samples to the series ``key``, creating it if needed.

        Parameters
        ----------
        key
            A valid key path.
        spec
            The series' spec, already checked against any stored spec by the caller.
        block
            For a dense series an ``ndarray`` of shape ``(m, *spec.shape)`` and dtype
            ``spec.dtype``; for ``str``/``bytes`` series a list of ``str``/``bytes``;
            for an object series a list of samples encoded by :mod:`simrecorder._codec`.
        """

    @abstractmethod
    def get_all(self, key: str) -> Any:
        """Return every sample of the series ``key``.

        Dense series come back as an ``ndarray`` (or a lazy view on stores with
        ``supports_lazy_views``) of shape ``(n, *sample_shape)``; other kinds as a list.

        Raises
        ------
        KeyNotFoundError
            If no series is stored at ``key``.
        """

    @abstractmethod
    def set(self, key: str, value: Any) -> None:
        """Store a single value at ``key``, replacing any earlier value."""

    @abstractmethod
    def _get_value(self, key: str) -> Any:
        """Return the single value at ``key`` (which is known to be a value node)."""

    @abstractmethod
    def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys of all series and single values, under ``prefix`` if given.

        ``prefix`` is a key path: ``'a'`` matches ``'a'`` and ``'a/...'``, not ``'ab'``.
        """

    @abstractmethod
    def flush(self) -> None:
        """Make everything appended so far durable in the backend (as far as it can)."""

    @property
    @abstractmethod
    def attrs(self) -> dict[str, Any]:
        """A copy of the store's metadata (provenance and run attributes)."""

    @abstractmethod
    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add or replace store metadata entries."""

    @property
    @abstractmethod
    def url(self) -> str:
        """URL that :func:`~simrecorder.open_datastore` turns into an equivalent store."""

    # -- derived behaviour --------------------------------------------------------------
    def get(self, key: str) -> Any:
        """Return the value stored by :meth:`set` at ``key``; None when absent.

        For a series key this returns :meth:`get_all` (SimRecorder returned the
        underlying dataset here).
        """
        validate_key(key)
        self._check_open(key)
        node = self.node_type(key)
        if node == "value":
            return self._get_value(key)
        if node == "series":
            return self.get_all(key)
        return None

    def append(self, key: str, value: Any) -> None:
        """Append one sample without a recorder (SimRecorder's store API).

        Slow compared to :meth:`Recorder.record <simrecorder.Recorder.record>`, which
        buffers; useful for scripts that talk to a store directly.
        """
        from .._buffer import one_sample_block  # local: the buffer module imports this one

        validate_key(key)
        self._check_writable(key)
        spec = self.series_spec(key)
        if spec is None:
            check_key_free(self, key, "series")
            spec = infer_spec(value)
            check_sample_size(key, spec, (self,))
        else:
            merge_specs(key, spec, value, where=repr(self))
        block = one_sample_block(key, spec, value, nul_free_str=not self.supports_nul_in_str)
        self.append_block(key, spec, block)
        # without a recorder there are no epochs: each sample is its own, so a store
        # left unclosed keeps it when a writer next opens it (see commit())
        self.commit()

    # -- optional hooks with safe defaults ----------------------------------------------
    def check_key(self, key: str) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raise :class:`~simrecorder.errors.InvalidKeyError` if this store can never
        hold ``key`` (a valid key path) -- e.g. a path part longer than the file
        system allows, or a name the format reserves.

        Called when a key is first recorded or set, so that a bad key fails at
        ``record`` time instead of blocking the store at flush time.
        """

    def commit(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Mark the current length of every series as committed.

        The recorder calls this after each *epoch*, a flush that wrote every buffered
        series. A store that a crash can leave with series of different lengths
        records the lengths here (atomically: all or none), and when it is next
        opened for writing it truncates every series to its committed length, so a
        resumed run continues from aligned series. The default does nothing.
        """

    def surrender(self) -> list[tuple[str, SeriesSpec, Any]]:
        """Give back every block taken but not yet delivered, and forget them.

        For stores that queue blocks internally (Redis): the recorder calls this when
        the store cannot deliver them (a permanent failure, or an exit while the server
        is away) to put them in its dead-letter directory. Each item is ``(key, spec,
        block)`` as handed to :meth:`append_block`. The default holds nothing back.
        """
        return []

    def set_series_attrs(self, key: str, attrs: Mapping[str, Any]) -> None:
        """Add or replace attributes of the series ``key`` (``units``, ``long_name``,
        see :meth:`Recorder.describe <simrecorder.Recorder.describe>`).

        Values are str, int, float, bool or lists of str; :meth:`series_attrs` gives
        them back equal (lists as lists). Stores with ``supports_series_attrs``
        override this and :meth:`series_attrs`.

        Raises
        ------
        SeriesAttrsNotSupportedError
            The store keeps no series attributes (the default).
        KeyNotFoundError
            No series is stored at ``key``.
        """
        raise self._no_series_attrs(key)

    def _no_series_attrs(self, key: str) -> SeriesAttrsNotSupportedError:
        return SeriesAttrsNotSupportedError(
            f"series attributes are not supported by this store: {self!r} (key {key!r})"
        )

    def series_attrs(self, key: str) -> dict[str, Any]:
        """The attributes set on the series ``key`` by :meth:`set_series_attrs` (a
        copy; empty when none were set).

        Raises
        ------
        SeriesAttrsNotSupportedError
            The store keeps no series attributes (the default).
        KeyNotFoundError
            No series is stored at ``key``.
        """
        raise self._no_series_attrs(key)

    @property
    def local_path(self) -> str | None:
        """The store's path on the local file system, or None (memory, servers).

        The recorder puts its dead-letter directory beside this path.
        """
        return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.node_type(key) in ("series", "value")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> DataStore:
        """Create a store from a URL of this store's protocol."""
        raise NotImplementedError(f"{cls.__name__} cannot be created from a URL")


def check_key_free(store: DataStore, key: str, want: NodeType) -> None:
    """Raise :class:`KeyConflictError` if ``key`` cannot hold a node of kind ``want``.

    ``key`` itself must be absent or already of kind ``want``, and no parent of it may
    be a series or a value (HDF5 and zarr cannot nest a node under an array).
    """
    node = store.node_type(key)
    if node is not None and node != want:
        raise KeyConflictError(f"key {key!r} in {store!r} is a {node}, cannot use it as a {want}")
    parts = key.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        pnode = store.node_type(parent)
        if pnode not in (None, "group"):
            raise KeyConflictError(
                f"key {key!r} in {store!r}: its parent {parent!r} is a {pnode}, not a group"
            )


def check_sample_size(key: str, spec: SeriesSpec, stores: Any) -> None:
    """Raise :class:`ValueTooLargeError` if a dense sample exceeds a store's limit."""
    if spec.kind != DENSE:
        return
    for store in stores:
        limit = store.max_value_bytes
        if limit is not None and spec.sample_nbytes > limit:
            raise ValueTooLargeError(
                f"key {key!r}: one sample is {spec.sample_nbytes:,} bytes; {store!r} "
                f"takes at most {limit:,} bytes per sample. Split the sample over "
                "several keys or record it into a store without the limit"
            )

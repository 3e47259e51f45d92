"""Series descriptions (:meth:`Recorder.describe <simrecorder.Recorder.describe>`) as
store attributes, and back.

A description is stored as plain attributes of the series, readable with h5py or
zarr without simrecorder:

``units``, ``long_name``
    CF conventions names, str.
``simrecorder_dims``
    Names of the sample axes (list of str; the first axis, time, is not in it).
``simrecorder_coords``
    JSON text ``{dim: [values...]}``: coordinate values of sample axes.
``simrecorder_time``
    Key of the series that is this series' time coordinate (default: the sample
    index ``step``).

Any other keyword of ``describe`` is stored under its own name (str, int, float,
bool).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._schema import DENSE, SeriesSpec
from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["COORDS_ATTR", "DIMS_ATTR", "TIME_ATTR", "Description", "encode_description"]

DIMS_ATTR = "simrecorder_dims"
COORDS_ATTR = "simrecorder_coords"
TIME_ATTR = "simrecorder_time"
_NAMED = ("units", "long_name", DIMS_ATTR, COORDS_ATTR, TIME_ATTR)


@dataclass(frozen=True)
class Description:
    """What :meth:`Recorder.describe <simrecorder.Recorder.describe>` said about a
    series (all None/empty when nothing was).

    Attributes
    ----------
    units, long_name
        CF attributes.
    dims
        Names of the sample axes, or None.
    coords
        Coordinate values per sample-axis name.
    time
        Key of the time-coordinate series, or None (the sample index).
    extra
        The other attributes.
    """

    units: str | None = None
    long_name: str | None = None
    dims: tuple[str, ...] | None = None
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    time: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Description:
        """Decode the attributes of a series (as ``store.series_attrs`` returns them)."""
        dims = attrs.get(DIMS_ATTR)
        coords_text = attrs.get(COORDS_ATTR)
        coords = json.loads(coords_text) if isinstance(coords_text, str) else {}
        time = attrs.get(TIME_ATTR)
        return cls(
            units=_text(attrs.get("units")),
            long_name=_text(attrs.get("long_name")),
            dims=None if dims is None else tuple(str(d) for d in _as_list(dims)),
            coords={str(name): np.asarray(values) for name, values in coords.items()},
            time=str(time) if time else None,
            extra={name: value for name, value in attrs.items() if name not in _NAMED},
        )

    def cf_attrs(self) -> dict[str, Any]:
        """``units``, ``long_name`` and the extra attributes (for xarray/NetCDF)."""
        out: dict[str, Any] = {}
        if self.units is not None:
            out["units"] = self.units
        if self.long_name is not None:
            out["long_name"] = self.long_name
        out.update(self.extra)
        return out

    def label(self, key: str) -> str:
        """An axis label: ``long_name [units]`` (``key`` when there is no name)."""
        name = self.long_name or key
        return f"{name} [{self.units}]" if self.units else name


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    return [v.decode() if isinstance(v, bytes) else v for v in list(value)]


def encode_description(
    key: str,
    spec: SeriesSpec,
    *,
    units: str | None = None,
    long_name: str | None = None,
    dims: Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    time: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The attributes that store a description of the series ``key`` (see the module
    docstring), checked against its ``spec``.

    Raises
    ------
    InvalidArgumentError
        ``dims`` does not match the sample shape, a coordinate names no dimension or
        has the wrong length, ``time`` is the series itself.
    ArgumentTypeError
        An extra attribute is not str, int, float or bool.
    """
    attrs: dict[str, Any] = {}
    if units is not None:
        attrs["units"] = str(units)
    if long_name is not None:
        attrs["long_name"] = str(long_name)
    shape = tuple(spec.shape or ()) if spec.kind == DENSE else ()
    if dims is not None:
        names = [dims] if isinstance(dims, str) else [str(d) for d in dims]
        if len(names) != len(shape):
            raise InvalidArgumentError(
                f"describe {key!r}: dims={names} names {len(names)} axes, but a sample "
                f"has shape {shape} ({len(shape)} axes; the time axis is not named here)"
            )
        attrs[DIMS_ATTR] = names
    if coords:
        attrs[COORDS_ATTR] = _encode_coords(key, coords, attrs.get(DIMS_ATTR), shape)
    if time is not None:
        if time == key:
            raise InvalidArgumentError(f"describe {key!r}: time={time!r} is the series itself")
        attrs[TIME_ATTR] = str(time)
    for name, value in (extra or {}).items():
        if not isinstance(value, (str, int, float, bool, np.generic)):
            raise ArgumentTypeError(
                f"describe {key!r}: attribute {name!r} must be str, int, float or bool, "
                f"got {type(value).__name__}"
            )
        attrs[name] = value.item() if isinstance(value, np.generic) else value
    return attrs


def _encode_coords(
    key: str, coords: Mapping[str, Any], dims: list[str] | None, shape: tuple[int, ...]
) -> str:
    """JSON text of the coordinates, each checked against its axis."""
    if dims is None:
        raise InvalidArgumentError(f"describe {key!r}: coords need dims= naming the axes")
    out = {}
    for name, values in coords.items():
        if name not in dims:
            raise InvalidArgumentError(
                f"describe {key!r}: coordinate {name!r} names no dimension of {dims}"
            )
        array = np.asarray(values)
        size = shape[dims.index(name)]
        if array.ndim != 1 or len(array) != size:
            raise InvalidArgumentError(
                f"describe {key!r}: coordinate {name!r} needs {size} values (1-D), "
                f"got shape {array.shape}"
            )
        out[name] = array.tolist()
    return json.dumps(out)

"""tarn's ``config.yml``: read (with or without PyYAML) and written.

A tarn folder holds ``config.yml`` with at least ``hash`` (a hashlib name, or a mapping
with ``name`` and the constructor's arguments) and ``levels`` (bytes of the digest per
folder level, ``-1`` for "the rest"); it may also set ``free_disk_size`` and
``max_size`` (bytes, or text such as ``"10G"``) and tarn's tools (``locker``, ``size``,
``usage``, ``labels``), which simrecorder accepts and ignores.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import StoreFormatError
from ._digest import Hasher, resolve_algorithm

__all__ = ["CONFIG_NAME", "DiskConfig", "load_config", "parse_size", "write_config"]

CONFIG_NAME = "config.yml"

_UNITS = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgtp", 1):
    _decimal, _binary = 1000**_power, 1 << (10 * _power)
    _UNITS.update({_letter: _decimal, f"{_letter}b": _decimal})
    _UNITS.update({f"{_letter}i": _binary, f"{_letter}ib": _binary})


@dataclass(frozen=True)
class DiskConfig:
    """What simrecorder uses of a tarn ``config.yml``."""

    hash_name: str
    hash_options: tuple[tuple[str, Any], ...]
    levels: tuple[int, ...]
    max_size: int | None
    free_disk_size: int | None

    def hasher(self) -> Hasher:
        """The hash constructor the folder's keys are digests of."""
        constructor = getattr(hashlib, self.hash_name, None)
        if constructor is None:
            name = self.hash_name
            return resolve_algorithm(name)[1]
        if self.hash_options:
            return functools.partial(constructor, **dict(self.hash_options))
        return constructor


def parse_size(value: object, where: str) -> int | None:
    """Bytes from an int or tarn's human text (``"10G"``, ``"512 MiB"``); ``None`` stays.

    Examples
    --------
    >>> parse_size("10G", "x"), parse_size("1 KiB", "x"), parse_size(5, "x")
    (10000000000, 1024, 5)
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        found = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", value)
        unit = found.group(2).lower() if found else ""
        if found and unit in _UNITS:
            return int(float(found.group(1)) * _UNITS[unit])
    raise StoreFormatError(f"{where}: cannot read the size {value!r}")


def load_config(root: str) -> DiskConfig:
    """Read ``root/config.yml``.

    Raises
    ------
    StoreFormatError
        The file cannot be read or does not describe a tarn folder.
    """
    path = os.path.join(root, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise StoreFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_config(text, path)


def parse_config(text: str, where: str) -> DiskConfig:
    """A :class:`DiskConfig` from the text of a ``config.yml`` (``where`` names it)."""
    data = _parse_yaml(text, where)
    if not isinstance(data, dict):
        raise StoreFormatError(f"{where} is not a tarn config (a mapping expected)")
    hash_value = data.get("hash", "sha256")
    if isinstance(hash_value, dict):
        options = dict(hash_value)
        name = options.pop("name", None)
        options.update(options.pop("kwargs", None) or {})
    else:
        name, options = hash_value, {}
    if not isinstance(name, str):
        raise StoreFormatError(f"{where}: 'hash' names no algorithm ({hash_value!r})")
    hasher = getattr(hashlib, name, None)
    if hasher is None:
        raise StoreFormatError(f"{where}: unknown hash algorithm {name!r}")
    digest_size = hasher(**options).digest_size
    levels = data.get("levels") or [1, digest_size - 1]
    if not isinstance(levels, list) or not all(isinstance(level, int) for level in levels):
        raise StoreFormatError(f"{where}: 'levels' must be a list of integers, got {levels!r}")
    return DiskConfig(
        hash_name=name,
        hash_options=tuple(sorted(options.items())),
        levels=tuple(levels),
        max_size=parse_size(data.get("max_size"), where),
        free_disk_size=parse_size(data.get("free_disk_size"), where) or None,
    )


def write_config(root: str, config: DiskConfig) -> None:
    """Write ``root/config.yml`` atomically (valid YAML, readable by tarn)."""
    lines = []
    if config.hash_options:
        lines.append("hash:")
        lines.append(f"  name: {config.hash_name}")
        lines.extend(f"  {name}: {value}" for name, value in config.hash_options)
    else:
        lines.append(f"hash: {config.hash_name}")
    lines.append("levels:")
    lines.extend(f"- {level}" for level in config.levels)
    if config.max_size is not None:
        lines.append(f"max_size: {config.max_size}")
    if config.free_disk_size:
        lines.append(f"free_disk_size: {config.free_disk_size}")
    path = os.path.join(root, CONFIG_NAME)
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    os.replace(temp, path)


def _parse_yaml(text: str, where: str) -> Any:
    try:
        import yaml
    except ImportError:
        return _parse_simple_yaml(text, where)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StoreFormatError(f"{where} is not valid YAML: {exc}") from exc


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("null", "~", ""):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(part) for part in text[1:-1].split(",") if part.strip()]
    if text.startswith("{") and text.endswith("}"):
        pairs = (part.split(":", 1) for part in text[1:-1].split(",") if part.strip())
        return {key.strip(): _scalar(value) for key, value in pairs}
    return text


def _parse_simple_yaml(text: str, where: str) -> dict[str, Any]:
    """The YAML subset tarn writes: top-level keys, one nested mapping level, lists."""
    data: dict[str, Any] = {}
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indented = line[0] in " -"
        body = line.strip()
        if indented and current is not None:
            if body.startswith("- "):
                if not isinstance(data[current], list):
                    data[current] = []
                data[current].append(_scalar(body[2:]))
                continue
            if ":" in body:
                if not isinstance(data[current], dict):
                    data[current] = {}
                key, value = body.split(":", 1)
                data[current][key.strip()] = _scalar(value)
                continue
        elif ":" in body:
            key, value = body.split(":", 1)
            current = key.strip()
            data[current] = _scalar(value)
            continue
        raise StoreFormatError(f"{where}, line {number}: cannot read {raw!r}")
    return data

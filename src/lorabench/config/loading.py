"""Reading configs: YAML (`yaml.safe_load`) plus `--set key.sub=value` overrides, relative paths
resolved against the config file, checked into the dataclasses of `config.schema`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from lorabench.errors import ConfigError


def _type_name(tp: Any) -> str:
    """A reader's name for an annotation: `one of 'auto', 'balanced', a mapping or null`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)] + (["null"] if type(None) in args else [])
        return "one of " + ", ".join(p.removeprefix("one of ") for p in parts)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(origin or tp) or getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own, more precise error
            return _coerce(options[0], value, key)
        for arg in options:
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = args or (Any,)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types name the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key '{where}{unknown[0]}' (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}.{name}" if prefix else name)
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key '{prefix + '.' if prefix else ''}{missing[0]}'")
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` strings; values are parsed as YAML (`1e-4`, `null`, `[a, b]`)."""
    raw = dict(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        try:
            # a lone YAML indicator (`|`, `>`, `&`, ...) is meant literally, e.g. data.delimiter=|
            value = yaml.safe_load(text) if text.strip() and not (len(text) == 1 and not text.isalnum()) else text
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
            node[part] = dict(child)
            node = node[part]
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder; give a YAML config file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def resolve_paths(raw: dict, base_dir: Path) -> dict:
    """Make data file paths relative to the config file's folder absolute."""
    data = raw.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for key in ("source", "val", "test"):
            if key in data:
                data[key] = _resolve(data[key], base_dir)
        raw = {**raw, "data": data}
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        raw = {**raw, "model": {**model, "name": _resolve(model["name"], base_dir, models=True)}}
    if isinstance(raw.get("models"), list):  # a comparison's entries: a model folder beside the config
        entries = []
        for entry in raw["models"]:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                name = _resolve(entry["name"], base_dir, models=True)
                if name != entry["name"]:  # keep the name as written for the report and the run folder
                    entry = {**entry, "name": name, "label": entry.get("label") or entry["name"]}
            entries.append(entry)
        raw = {**raw, "models": entries}
    return raw


def _resolve(v: Any, base_dir: Path, *, models: bool = False) -> Any:
    """A relative file or folder path -> absolute against the config's folder; names and hub ids unchanged."""
    if not isinstance(v, str) or v == "disaster_tweets":
        return v
    if v.startswith("~"):
        return str(Path(v).expanduser())
    if Path(v).is_absolute():
        return v
    candidate = base_dir / v
    if candidate.exists() or v.startswith(".") or (not models and _looks_like_path(v)):
        return str(candidate.resolve())
    return v


def _looks_like_path(value: str) -> bool:
    if value == "disaster_tweets":
        return False
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in {
        ".csv", ".json", ".jsonl", ".parquet", ".tsv"} or "/" in value and not _is_hub_like(value)


def _is_hub_like(value: str) -> bool:
    return value.count("/") == 1 and not value.startswith((".", "/")) and "." not in value.split("/")[0]


def load_config(cls: type, path: str | Path | None, overrides: list[str] | None = None) -> Any:
    """Read YAML `path` (or start empty), apply overrides, resolve paths, validate into `cls`."""
    raw = read_yaml(path) if path else {}
    raw = apply_overrides(raw, overrides or [])
    base = Path(path).resolve().parent if path else Path.cwd()
    raw = resolve_paths(raw, base)
    return from_dict(cls, raw)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def field_help(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every field, recursing into sections."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        sub = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if sub:
            rows.append((key, "", f.metadata.get("help", "")))
            rows.extend(field_help(sub[0], key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows

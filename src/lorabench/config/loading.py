"""Reading configs: YAML (`yaml.safe_load`, a key written twice refused: `load_yaml`) plus `--set key.sub=value` overrides, relative paths
resolved against the config file, validated by pydantic into the dataclasses of `config.schema`.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pydantic
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
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(origin or tp) or getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Validate a mapping into config class `cls`; unknown keys and wrong types name the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    try:
        return cls.__pydantic_validator__.validate_python(data)
    except pydantic.ValidationError as e:
        raise config_error(e, cls, data, prefix) from e


_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")


def config_error(err: pydantic.ValidationError, cls: type, data: dict, prefix: str = "") -> ConfigError:
    """pydantic's first error as one line naming the key path. First as a reader meets them: unknown keys,
    then the keys in the order written (a section's checks after its values), then missing keys."""
    first = min(err.errors(include_url=False), key=lambda e: _rank(data, e))
    return ConfigError(_message(cls, data, prefix, first))


def _rank(data: Any, e: dict) -> list[tuple]:
    rank, value, loc = [], data, e["loc"]
    for i, part in enumerate(loc):
        if isinstance(value, dict) and part in value:
            rank.append((0 if e["type"] in _UNKNOWN and i == len(loc) - 1 else 1, list(value).index(part)))
            value = value[part]
        elif isinstance(value, (list, tuple)) and isinstance(part, int) and part < len(value):
            rank.append((1, part))
            value = value[part]
        else:  # a missing key, or a union's alternative
            return rank + [(2,)] if e["type"].startswith("missing") else rank
    return rank + [(3,)]  # a check of the whole section


def _message(cls: type, data: Any, path: str, e: dict) -> str:
    tp, value = cls, data
    for part in e["loc"]:
        if dataclasses.is_dataclass(tp):
            fields = typing.get_type_hints(tp)
            if part not in fields:
                return f"unknown key '{path + '.' if path else ''}{part}' (allowed: {', '.join(fields)})"
            tp = fields[part]
        elif typing.get_origin(tp) is list:
            tp = (typing.get_args(tp) or (Any,))[0]
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            value = None
        path = f"{path}[{part}]" if isinstance(part, int) else f"{path}.{part}" if path else part
        if typing.get_origin(tp) in (Union, types.UnionType):
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(options) > 1:  # no alternative fits: name them all
                return f"{path}: expected {_type_name(tp)}, got {value!r}"
            tp = options[0]  # Optional[X]: X's own, more precise error
    if e["type"].startswith("missing"):
        return f"missing key '{path}'"
    if e["type"] == "lorabench":  # a check's message, with {key.sub} for the path of a key
        return re.sub(r"\{key(?:\.([\w.]+))?\}", lambda m: ".".join(p for p in (path, m.group(1)) if p),
                      e["ctx"]["message"])
    return f"{path or 'config'}: expected {_type_name(tp)}, got {e['input']!r}"


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
            value = load_yaml(text, f"--set {key}") if text.strip() and not (len(text) == 1 and not text.isalnum()) \
                else text
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


def load_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load(text)` that refuses a key written twice in one mapping (PyYAML keeps the last without a
    word): `ConfigError` "<where>: key 'train.epochs' is written twice (lines 8 and 10); keep one". Every YAML
    lorabench reads goes through here: configs, sweep files, `--set` values, the config.yaml of runs and
    comparisons. Raises `yaml.YAMLError` for text that is not YAML."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is not None:
        _unique_keys(node, "", where)
    return yaml.safe_load(text)


def _unique_keys(node: yaml.Node, path: str, where: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple, int] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden, as YAML says
                _unique_keys(value, path, where)
                continue
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            full = f"{path}.{name}" if path else str(name)
            ident, line = (key.tag, name), key.start_mark.line + 1
            if ident in seen:
                raise ConfigError(f"{where}: key '{full}' is written twice (lines {seen[ident]} and {line}); keep one")
            seen[ident] = line
            _unique_keys(value, full, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _unique_keys(item, f"{path}[{i}]", where)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder; give a YAML config file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"), str(path))
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
    for name, info in cls.__pydantic_fields__.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        sub = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if sub:
            rows.append((key, "", info.description or ""))
            rows.extend(field_help(sub[0], key + "."))
            continue
        default = "(required)" if info.is_required() else info.get_default(call_default_factory=True, validated_data={})
        rows.append((key, repr(default), info.description or ""))
    return rows

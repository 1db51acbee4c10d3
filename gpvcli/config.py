"""Strict, typed configuration: dataclasses filled from YAML presets and overrides.

A config is a tree of dataclasses. `from_dict` fills one from plain data and
refuses unknown keys and wrong types; `apply_overrides` takes `section.key=value`
strings (values parsed as YAML); `to_dict` gives plain data back for saving.
Presets live in `gpvcli/configs/NAME.yaml`; a path to a YAML file works too.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gpvcli.errors import GPVError

T = TypeVar("T")
DEFAULT_PRESET = "tiny"          # the config of a command or function given none: the CPU preset


def _check(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(a, value, where)
            except GPVError as e:
                errors.append(str(e))
        raise GPVError(f"config {where}: {value!r} has the wrong type (expected {tp})")
    if origin is typing.Literal:
        if value not in args:
            raise GPVError(f"config {where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise GPVError(f"config {where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise GPVError(f"config {where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_check(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise GPVError(f"config {where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GPVError(f"config {where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GPVError(f"config {where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise GPVError(f"config {where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise GPVError(f"config {where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise GPVError(f"config {where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise GPVError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise GPVError(f"unknown config key {prefix}{unknown[0]}",
                       hint=f"known keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in data.items():
        kwargs[k] = _check(hints[k], v, f"{where}.{k}" if where else k)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.d_model=64' -> (['model', 'd_model'], 64); the value is read as YAML."""
    if "=" not in text:
        raise GPVError(f"override {text!r} is not section.key=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else ""


def merge_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` overrides to plain config data (a deep copy is returned)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise GPVError(f"override {text!r}: {p} is not a section")
        node[path[-1]] = value
    return data


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("gpvcli.configs").iterdir() if p.name.endswith(".yaml"))


def load_yaml(name_or_path: str | Path) -> dict:
    """Plain data of a preset name (`tiny`, `gpv1`, ...) or of a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise GPVError(f"config file not found: {path}",
                           hint=f"give a YAML file or a preset: {', '.join(preset_names())}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise GPVError(f"config {path} is not UTF-8 text (byte {e.start}: {e.reason})",
                           hint="save it as UTF-8")
    else:
        if str(name_or_path) not in preset_names():
            raise GPVError(f"unknown config {name_or_path!r}", hint=f"presets: {', '.join(preset_names())}")
        text = resources.files("gpvcli.configs").joinpath(f"{name_or_path}.yaml").read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise GPVError(f"config {name_or_path} is not valid YAML ({e})", hint="fix the line it names")
    if not isinstance(data, dict):
        raise GPVError(f"config {name_or_path} must be a mapping of sections",
                       hint="e.g. model: {...} and train: {...}")
    return data


def load_with_overrides(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Plain data of a preset or YAML file with `section.key=value` overrides applied (each override must
    name its section)."""
    for text in overrides:
        if len(parse_override(text)[0]) < 2:
            raise GPVError(f"override {text!r} names no section", hint="write e.g. train.lr=3e-4 or model.hidden=64")
    return merge_overrides(load_yaml(name_or_path), list(overrides))

"""The machinery of the typed configs: `opt` fields whose `help` is the documentation (the CLI
builds its flags from it, so a new option is one new field), YAML loading and coercion.
Precedence: field default < YAML file < command-line flag."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import field
from typing import Any, get_args, get_origin, get_type_hints

from cola_ray.errors import UserError


def opt(default: Any = None, help: str = "", choices: tuple | None = None, aliases: tuple[str, ...] = (),
        **kw) -> Any:
    """A config field; `aliases`: former names, still accepted as flags and YAML keys."""
    meta = {"help": help, "choices": choices, "aliases": aliases}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def check_choices(config) -> None:
    """Every option with `choices` holds one of them."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise UserError(f"--{f.name.replace('_', '-')} {getattr(config, f.name)!r}: "
                            f"expected one of {', '.join(choices)}")


class YamlDict(dict):
    """A mapping option: a YAML mapping in the config file, or YAML/JSON text on the command line
    (`--recipe-params '{gptq-w4a16: {group_size: 64}}'`)."""

    def __init__(self, value=None):
        if isinstance(value, str):
            import yaml

            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ValueError(f"invalid YAML: {str(e).splitlines()[0]}") from None
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"expected a mapping, got {value!r}")
        super().__init__(value or {})  # a dict, or (key, value) pairs (dataclasses.asdict)


def split_list(values: list[str]) -> list[str]:
    """['cola,random', 'lexical'] -> ['cola', 'random', 'lexical'] (flags may list several)."""
    return [v.strip() for item in values for v in str(item).split(",") if v.strip()]


def load_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"--config {path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: invalid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value")
    return data


def base_type(hint):
    """`int | None` -> int; `list[str]` stays list[str]."""
    if get_origin(hint) is list:
        return hint
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def coerce(cls, name: str, value: Any, source: str) -> Any:
    kind = base_type(get_type_hints(cls)[name])
    if value is None:
        return None
    if get_origin(kind) is list:
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if kind is str:
        return str(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{source}: {name}={value!r} is not true/false")
    if kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: {name}={value!r} is not a {kind.__name__}") from None
    return value


def field_name(cls, key: str) -> str:
    """A flag or YAML key ('max-docs', 'max_docs') -> the field it sets (aliases resolved)."""
    key = key.replace("-", "_")
    for f in dataclasses.fields(cls):
        if key in f.metadata.get("aliases", ()):
            return f.name
    return key


def build_config(cls, yaml_path: str | None = None, overrides: dict | None = None):
    """Defaults < YAML < overrides (only keys whose value is not None)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path:
        for key, value in load_yaml(yaml_path).items():
            key = field_name(cls, str(key))
            if key not in names:
                raise UserError(f"--config {yaml_path}: unknown option {key!r}")
            values[key] = coerce(cls, key, value, f"--config {yaml_path}")
        values["config"] = yaml_path
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = coerce(cls, key, value, "command line")
    return cls(**values)

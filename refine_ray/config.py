"""Typed, validated configuration: YAML (safe_load) → pydantic models; unknown keys and bad values fail clearly."""
from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from refine_ray import storage

M = TypeVar("M", bound="StrictModel")


class ConfigError(ValueError):
    """A config file or flag that cannot be used; the message names the file and the key."""


def flag(name: str | None) -> dict[str, Any]:
    """`Field(..., json_schema_extra=flag("--gpu"))`: the command-line flag of a config field
    (default: `--field-name`), or `flag(None)` to keep the field off the command line (refine_ray.cli)."""
    return {"flag": name}


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def load_config(model: type[M], path: str | None = None, overrides: dict[str, Any] | None = None) -> M:
    """Load `path` (local or s3://) into `model`, then apply CLI overrides given as dotted keys.

    Overrides whose value is None are ignored, so argparse defaults of None mean "keep the file's value".
    """
    data: dict[str, Any] = {}
    source = path or "flags"
    if path:
        try:
            loaded = yaml.safe_load(storage.read_text(path))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            msg = str(err["msg"]).removeprefix("Value error, ")
            # a nested check (e.g. refine's prepare block) already names its full key path
            problems.append(msg if msg.startswith(loc + ".") else f"{loc}: {msg}")
        raise ConfigError(f"{source}: invalid configuration: " + "; ".join(problems)) from None  # one line

"""The command lines of the jobs: flags generated from each job's config model, one exit-code contract.

`refine-ray <job> [flags]` (or `python jobs/<job>.py [flags]`, the form `ray job submit` runs).
Every scalar field of the job's pydantic model is a flag: field `a.b_c` → `--b-c` (dotted key `a.b_c`),
help = the field's description plus its key and default, bool fields as `--x/--no-x`. A field declares
a shorter or clearer flag next to itself with `json_schema_extra=flag("--gpu")`, or `flag(None)` to
stay off the command line (secrets, nested tables better written in YAML).

Exit status, the same for every job:
  0  done
  1  some inputs failed (each recorded in the job's errors table)
  2  the job could not run (bad flag or config, missing input, unusable checkpoint, stopped part-way)
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
import types
import typing
from typing import Any, Callable, Literal

from pydantic import BaseModel

from refine_ray.config import ConfigError, flag, load_config  # noqa: F401 - flag is part of this API
from refine_ray.logs import add_log_level_argument, configure_logging

EXIT_DONE = 0
EXIT_SOME_FAILED = 1
EXIT_CANNOT_RUN = 2

JOBS = ("synthesize", "build_3dmm", "preprocess", "train", "refine", "report", "quickstart")


class CannotRun(Exception):
    """The job cannot start or cannot go on; the message says why in one line (exit status 2)."""


def error(message: Any) -> None:
    """The one way a job reports a problem: one line on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)


_SCALARS = (str, int, float, bool)


def _scalar(annotation: Any) -> tuple[type, tuple | None, str | None] | None:
    """(type, choices, nargs) of a flag-able annotation — str/int/float/bool/Literal, a list of one of
    those, optionally `| None` — else None (tables and pairs are written in the YAML config)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(args[0]) if len(args) == 1 else None
    if origin is list:
        (item,) = typing.get_args(annotation) or (None,)
        inner = _scalar(item)
        return (inner[0], inner[1], "+") if inner and inner[2] is None and inner[0] is not bool else None
    if origin is Literal:
        choices = typing.get_args(annotation)
        kinds = {type(c) for c in choices}
        return (kinds.pop(), choices, None) if len(kinds) == 1 and kinds <= set(_SCALARS) else None
    return (annotation, None, None) if annotation in _SCALARS else None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def model_flags(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, Any]]:
    """(flag, dotted key, field info) for every field of `model` that has a flag, nested models included."""
    found = []
    for name, info in model.model_fields.items():
        key = prefix + name
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "flag" in extra and extra["flag"] is None:
            continue
        sub = _submodel(info.annotation)
        if sub is not None:
            found.extend(model_flags(sub, key + "."))
        elif _scalar(info.annotation) is not None:
            found.append((extra.get("flag") or "--" + name.replace("_", "-"), key, info))
    return found


def _default_text(info) -> str:
    if info.default_factory is not None or info.is_required():
        return ""
    value = info.default
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return repr(value) if isinstance(value, str) else f"{value:.6g}" if isinstance(value, float) else str(value)


def parser_for(model: type[BaseModel], prog: str, description: str | None,
               config_help: str = "YAML file with the keys below (flags override it)") -> argparse.ArgumentParser:
    """An argparse parser with `--config` plus one flag per field of `model` (see the module doc)."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help=config_help)
    add_log_level_argument(p)
    seen: dict[str, str] = {}
    for name, key, info in model_flags(model):
        if name in seen:
            raise TypeError(f"{model.__name__}: fields {seen[name]} and {key} both want the flag {name}; "
                            f"give one of them json_schema_extra=flag(...)")
        seen[name] = key
        kind, choices, nargs = _scalar(info.annotation)
        default = _default_text(info)
        help_text = " ".join(filter(None, [info.description, f"[{key}" + (f"; default {default}]" if default else "]")]))
        help_text = help_text.replace("%", "%%")
        if kind is bool:
            p.add_argument(name, dest=key, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            p.add_argument(name, dest=key, type=kind, choices=choices, nargs=nargs, default=None, help=help_text,
                           metavar=None if choices else name.lstrip("-").replace("-", "_").upper())
    return p


def overrides(model: type[BaseModel], args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line (flags left out stay None and keep the file's value)."""
    values = vars(args)
    return {key: values.get(key) for _, key, _ in model_flags(model)}


def load(model: type[BaseModel], args: argparse.Namespace, extra: dict[str, Any] | None = None):
    """The job's config: `--config` file, then the flags, then `extra` overrides; ConfigError on bad values.
    Also sets up the job's logging from `--log-level`, the first thing every job does with its flags."""
    configure_logging(getattr(args, "log_level", "info"))
    return load_config(model, args.config, {**overrides(model, args), **(extra or {})})


def run_job(body: Callable[[], int]) -> int:
    """Run a job body under the exit-code contract: known problems print one line and give 2,
    anything unexpected prints its traceback, then one line, and gives 2 (a re-run resumes)."""
    try:
        return int(body())
    except (CannotRun, ConfigError, FileNotFoundError, ValueError) as exc:
        logging.getLogger("refine_ray").debug("where the job stopped", exc_info=True)   # --log-level debug
        error(exc)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        error("interrupted; re-run the same command to resume")
        return EXIT_CANNOT_RUN
    except Exception as exc:  # noqa: BLE001 - storage outage, lost cluster…: what was committed stays
        traceback.print_exc()
        error(f"the job stopped ({type(exc).__name__}: {exc}); re-run the same command to resume")
        return EXIT_CANNOT_RUN


def job_main(parser: argparse.ArgumentParser, model: type[BaseModel],
             run: Callable[[Any, argparse.Namespace], int], argv: list[str] | None) -> int:
    """A job's `main`: parse its flags, then under the exit-code contract (`run_job`) load its config
    (`--config` file, then the flags) and `run(config, args)`, which returns the exit status."""
    args = parser.parse_args(argv)
    return run_job(lambda: run(load(model, args), args))


def main(argv: list[str] | None = None) -> int:
    """`refine-ray <job> [flags]`: dispatch to the job's own `main`."""
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    names = ", ".join(j.replace("_", "-") for j in JOBS)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: refine-ray <job> [flags]   (jobs: {names}; `refine-ray <job> --help` lists its flags)")
        return EXIT_DONE if argv else EXIT_CANNOT_RUN
    job = argv[0].replace("-", "_")
    if job not in JOBS:
        error(f"unknown job {argv[0]!r} (one of: {names})")
        return EXIT_CANNOT_RUN
    return importlib.import_module(f"refine_ray.cli.{job}").main(argv[1:])

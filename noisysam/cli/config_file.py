"""TOML configuration files for the command line (``noisysam train --config run.toml``).

A file sets a command's options by key: the option's parameter name, which for the training options
is the :class:`~noisysam.run.config.TrainConfig` field (``noise_rate``, ``method_params``; ``json`` for
``--json``). ``--method-param`` / ``--model-param`` are TOML tables. The file's values take the
place of the defaults, so an option given on the command line overrides the file. Reading uses the
standard library's ``tomllib`` (``tomli`` on Python < 3.11); :func:`dumps` writes the small subset a
configuration needs (strings, numbers, booleans, arrays and inline tables of them), so no TOML
writer is a dependency.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Optional

import click

from noisysam.core.params import did_you_mean
from noisysam.run.config import TrainConfig

#: Options that are not settings of a run (the file itself, and printing it).
NOT_KEYS = ("config", "print_config")
#: Keys that are not the option's parameter name (``--json`` is stored as ``as_json``).
_RENAMED = {"as_json": "json"}


def key(param: click.Parameter) -> str:
    """The config-file key of a command option."""
    return _RENAMED.get(param.name, param.name)


def keyed_options(command: click.Command) -> dict[str, click.Option]:
    """The options of ``command`` a config file may set, by key, in --help order."""
    return {key(p): p for p in command.params if isinstance(p, click.Option) and p.name not in NOT_KEYS}


def _toml():
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the same parser as a package
        try:
            import tomli as tomllib
        except ImportError:
            raise ValueError("reading a TOML config file needs Python >= 3.11 or the tomli package "
                             "(pip install tomli)") from None
    return tomllib


def read(path: str) -> dict[str, Any]:
    """The top-level table of TOML file ``path``; ValueError naming the file and the position of a syntax error."""
    tomllib = _toml()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: not UTF-8 ({e})") from None


def _is_json(value: Any) -> bool:
    """A TOML value a --method-param/--model-param value can be (no dates or times)."""
    if isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, list):
        return all(map(_is_json, value))
    return isinstance(value, dict) and all(isinstance(k, str) and _is_json(v) for k, v in value.items())


def _type_of(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _shaped(param: click.Option, value: Any, lists: Iterable[str]) -> tuple[Optional[str], Any]:
    """``value`` in the form click parses for ``param``, or the type it should have had (strict: TOML has types,
    so "3" is no integer and 3.5 no integer either)."""
    if param.multiple:  # --method-param KEY=VALUE: a table, each value as JSON
        ok = isinstance(value, dict) and all(k and "=" not in k and _is_json(v) for k, v in value.items())
        return (None, [f"{k}={json.dumps(v)}" for k, v in value.items()]) if ok else ("a table of values", None)
    if param.name in lists:  # comma-separated lists (table's --methods, --rates, --seeds)
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return None, ",".join(map(str, value))
        return (None, value) if isinstance(value, str) else ("an array or a comma-separated string", None)
    t = param.type
    if param.is_flag or isinstance(t, click.types.BoolParamType):
        expected, ok = "true or false", isinstance(value, bool)
    elif isinstance(t, click.types.IntParamType):
        expected, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(t, click.types.FloatParamType):
        expected, ok = "a number", isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        expected, ok = "a string", isinstance(value, str)
    return (None, value) if ok else (expected, None)


def default_map(ctx: click.Context, path: str, lists: Iterable[str] = ()) -> dict[str, Any]:
    """The options set by config file ``path`` for ``ctx.command``, as a click ``default_map`` (parameter name ->
    value): command-line options then override them exactly, flags included. ``lists``: options that take a
    comma-separated list (a TOML array or string). Raises click.UsageError (exit 2, one line) naming the key
    for an unknown key, a wrong type or a value out of range."""
    options = keyed_options(ctx.command)
    out = {}
    try:
        values = read(path)
    except (OSError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    for name, value in values.items():
        param = options.get(name)
        if param is None:
            hint = did_you_mean(name.replace("-", "_"), options) or f"; keys: {', '.join(options)}"
            raise click.UsageError(f"{path}: unknown key {name!r}{hint}")
        expected, shaped = _shaped(param, value, lists)
        if expected:
            raise click.UsageError(f"{path}: {name} must be {expected}, got {_type_of(value)} ({value!r})")
        try:
            param.process_value(ctx, shaped)  # ranges, choices and the option's own parsing, as click applies them
        except click.BadParameter as e:
            raise click.UsageError(f"{path}: {name}: {e.message}") from None
        out[param.name] = shaped
    return out


def resolved_values(ctx: click.Context, config: TrainConfig) -> dict[str, Any]:
    """Every key of ``ctx.command`` with its value in this invocation: the training options as ``config.resolved()``
    has them (the profile's values filled in, so the file pins the run), the others as given."""
    resolved = config.resolved()
    fields = {f.name for f in dataclasses.fields(resolved)}
    return {name: getattr(resolved, p.name) if p.name in fields else ctx.params[p.name]
            for name, p in keyed_options(ctx.command).items()}


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _string(text: str) -> str:
    # A JSON string is a TOML basic string (same escapes, \uXXXX included), except that TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _key_text(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def value_text(value: Any) -> str:
    """``value`` as a TOML value: string, boolean, integer, float (nan/inf included), array or inline table."""
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # "0.1", "1e-05", "inf", "-inf", "nan": all TOML floats
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(value_text, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key_text(str(k))} = {value_text(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"cannot write {value!r} ({type(value).__name__}) as TOML")


def dumps(values: dict[str, Any], header: str = "") -> str:
    """A TOML document of ``key = value`` lines; None (TOML has no null) becomes a comment ``# key: not set``.
    ``header``: comment lines put first."""
    lines = [f"# {line}" for line in header.splitlines()]
    for name, value in values.items():
        lines.append(f"# {name}: not set" if value is None else f"{_key_text(name)} = {value_text(value)}")
    return "\n".join(lines) + "\n"

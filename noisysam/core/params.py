"""One input contract for every public entry point: parameter constraints declared next to the parameters.

Each entry point (``TrainConfig``, ``SAM``, the methods, the models, the noise functions, ``NoisyLabels``,
``Loader``, ``ImageDataset``) declares a table ``{parameter: constraint or [constraints]}`` in the manner of
scikit-learn's ``utils/_param_validation.py``. A value is valid when it satisfies any of its parameter's
constraints; each constraint checks the value's type first and only then its range, so a wrong type is
reported like a value out of range, never as a TypeError from a comparison. ``bool`` is not an int and an
int is not a bool. The one error, :class:`InvalidParameterError` (a ``ValueError``), names the parameter,
what is allowed and what was given::

    rho must be a finite float > 0, got 'a' (str)

Every table is kept in :data:`TABLES` (keyed by its owner, e.g. ``"noisysam.optim.sam.SAM"``), so that a test can
generate invalid values for every public parameter from the table alone.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
import os
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "ArrayLike", "Boolean", "Constraint", "HasAttrs", "InstanceOf", "Interval", "InvalidParameterError", "Options",
    "ParamTable", "PathLike", "SubclassOf", "TABLES", "Text", "declare", "validate_params", "validate_with",
]

T = TypeVar("T")


class InvalidParameterError(ValueError):
    """A parameter has the wrong type or a value out of range; the message names it, what is allowed and
    what was given."""


class Constraint:
    """What one parameter may be; ``str(constraint)`` describes it for error messages ("an integer >= 1")."""

    def is_satisfied_by(self, value: Any) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class Interval(Constraint):
    """Numbers of ``kind`` (``int`` or ``float``; a float parameter accepts ints too) between ``low`` and
    ``high`` (None: unbounded on that side); ``closed`` in {"both", "left", "right", "neither"} says which
    bounds belong to the interval. NaN never does; +-inf only as a bound that is given and closed
    (``Interval(float, 1, math.inf, closed="right")`` is p in (1, inf]), so an unbounded float is finite."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, closed: str = "both"):
        if kind not in (int, float):
            raise TypeError(f"Interval kind must be int or float, got {kind!r}")
        if closed not in ("both", "left", "right", "neither"):
            raise TypeError(f"closed must be 'both', 'left', 'right' or 'neither', got {closed!r}")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.closed_low = closed in ("both", "left") and low is not None
        self.closed_high = closed in ("both", "right") and high is not None

    def is_satisfied_by(self, value: Any) -> bool:
        if not (_is_int(value) if self.kind is int else _is_real(value)):  # type first ...
            return False
        if math.isnan(value):  # ... then range
            return False
        at_low, at_high = self.closed_low and value == self.low, self.closed_high and value == self.high
        if math.isinf(value) and not (at_low or at_high):  # inf only as a closed bound
            return False
        above = self.low is None or value > self.low or at_low
        below = self.high is None or value < self.high or at_high
        return above and below

    def _range(self) -> str:
        low, high = self.low, self.high
        if high is not None and math.isinf(high):  # only a closed inf bound reaches here as inf
            high = None
        if low is not None and high is not None:
            return f" in {'[' if self.closed_low else '('}{low:g}, {high:g}{']' if self.closed_high else ')'}"
        if low is not None:
            return f" {'>=' if self.closed_low else '>'} {low:g}"
        if high is not None:
            return f" {'<=' if self.closed_high else '<'} {high:g}"
        return ""

    def __str__(self) -> str:
        if self.kind is int:
            return f"an integer{self._range()}"
        inf_allowed = self.closed_high and self.high is not None and math.isinf(self.high)
        finite = "" if inf_allowed or (self.low is not None and self.high is not None) else "finite "
        return f"a {finite}float{self._range()}" + (" (inf allowed)" if inf_allowed else "")


class Options(Constraint):
    """One of ``values`` (compared with ``==`` among values of the same type: 1 is not True, "1" is not 1).
    ``values`` is kept by reference, so a registry dict passed here stays up to date."""

    def __init__(self, values: Iterable[Any]):
        self.values = values

    def is_satisfied_by(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


class Boolean(Constraint):
    """True or False (a Python or numpy bool; not 0 or 1)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def __str__(self) -> str:
        return "a bool"


class _Described(Constraint):
    """A constraint whose description is given by its declaration."""

    description: str

    def __str__(self) -> str:
        return self.description


class _NoneConstraint(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


class Text(_Described):
    """A non-empty ``str``, or one matching ``pattern`` in full; ``description`` says what it is."""

    def __init__(self, pattern: str | None = None, description: str = "a non-empty string"):
        self.pattern = None if pattern is None else re.compile(pattern)
        self.description = description

    def is_satisfied_by(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        return bool(value) if self.pattern is None else self.pattern.fullmatch(value) is not None


class PathLike(Constraint):
    """A file system path: a non-empty ``str`` or an ``os.PathLike``."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, os.PathLike) or (isinstance(value, str) and bool(value))

    def __str__(self) -> str:
        return "a path (str or os.PathLike)"


class InstanceOf(_Described):
    """An instance of one of ``types`` but none of ``exclude``; ``description`` names it for users ("a dict")."""

    def __init__(self, *types: type, description: str, exclude: tuple[type, ...] = ()):
        self.types, self.description, self.exclude = types, description, exclude

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.types) and not isinstance(value, self.exclude)


class SubclassOf(_Described):
    """A class derived from ``base`` (e.g. an optimizer class, not an instance)."""

    def __init__(self, base: type, description: str):
        self.base, self.description = base, description

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, type) and issubclass(value, self.base)


class ArrayLike(Constraint):
    """A sequence numpy can turn into an array: list, tuple, range, numpy array or tensor (``__array__``);
    not a string, a number or a dict. Shape and values are the entry point's own content checks."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (list, tuple, range)) or (hasattr(value, "__array__") and np.ndim(value) > 0)

    def __str__(self) -> str:
        return "an array-like (list, tuple, numpy array or tensor)"


class HasAttrs(_Described):
    """An object with the attributes ``names`` (e.g. a dataset with ``y_train``; ``__call__``: a callable)."""

    def __init__(self, *names: str, description: str):
        self.names, self.description = names, description

    def is_satisfied_by(self, value: Any) -> bool:
        return all(hasattr(value, n) for n in self.names)


NONE = _NoneConstraint()


def _as_constraints(spec: Any) -> tuple[Constraint, ...]:
    """A table entry (a constraint, None, or a list of those) as a tuple of constraints."""
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    out = tuple(NONE if c is None else c for c in items)
    bad = [c for c in out if not isinstance(c, Constraint)]
    if bad or not out:
        raise TypeError(f"a table entry must be a Constraint, None or a non-empty list of them, got {spec!r}")
    return out


_show = reprlib.Repr()
_show.maxstring, _show.maxother, _show.maxlist, _show.maxdict = 60, 60, 6, 4


def _describe(constraints: tuple[Constraint, ...]) -> str:
    words = [str(c) for c in constraints]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


class ParamTable:
    """The constraints of one entry point's parameters: ``{name: (constraint, ...)}``."""

    def __init__(self, owner: str, table: Mapping[str, Any]):
        self.owner = owner
        self.constraints: dict[str, tuple[Constraint, ...]] = {k: _as_constraints(v) for k, v in table.items()}

    def check(self, values: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidParameterError` for the first value of ``values`` (in table order) that
        satisfies none of its constraints; names the table does not declare are left alone."""
        for name, constraints in self.constraints.items():
            if name in values:
                value = values[name]
                if not any(c.is_satisfied_by(value) for c in constraints):
                    raise InvalidParameterError(f"{name} must be {_describe(constraints)}, got "
                                                f"{_show.repr(value)} ({type(value).__name__})")


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the one of ``names`` closest to a mistyped ``name`` (difflib's similarity of at
    least 0.6), else "": the hint every unknown-name message ends with."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


#: Every declared table by owner: what the parameter tests enumerate.
TABLES: dict[str, ParamTable] = {}


def declare(owner: str, table: Mapping[str, Any]) -> ParamTable:
    """Register the table of ``owner`` (an entry point's qualified name) and return it."""
    TABLES[owner] = ParamTable(owner, table)
    return TABLES[owner]


def _named(target: Any) -> list[inspect.Parameter]:
    """The named parameters of a function, or of a class's ``__init__`` (without ``self``)."""
    func = target.__init__ if isinstance(target, type) else target
    return [p for p in inspect.signature(func).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]


def validate_params(table: Mapping[str, Any] | ParamTable, *, owner: str | None = None) -> Callable[[T], T]:
    """Decorate a function or a class (its ``__init__``) so every call checks the arguments it was given
    against ``table`` (a mapping, registered under ``owner``, default ``module.qualname``; or a declared
    :class:`ParamTable`) before running. Every named parameter of the signature must be declared and every
    declared name must be a parameter: a new parameter cannot go unchecked."""

    def decorate(target: T) -> T:
        func = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
        signature = inspect.signature(func)
        names = set(table.constraints if isinstance(table, ParamTable) else table)
        named = {p.name for p in _named(target)}
        if named != names:
            raise TypeError(f"parameter table of {target!r}: undeclared {sorted(named - names)}, "
                            f"not parameters {sorted(names - named)}")
        declared = table if isinstance(table, ParamTable) else declare(
            owner or f"{target.__module__}.{target.__qualname__}", table)

        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            declared.check(signature.bind(*args, **kwargs).arguments)
            return func(*args, **kwargs)

        if isinstance(target, type):
            target.__init__ = checked  # type: ignore[misc]
            return target
        return checked  # type: ignore[return-value]

    return decorate


def validate_with(shared: Mapping[str, Any], *, owner: str | None = None) -> Callable[[T], T]:
    """:func:`validate_params` with the entries of ``shared`` (a module's table of every parameter its entry
    points take) that the decorated signature names; None is allowed too where None is the default."""

    def decorate(target: T) -> T:
        table = {p.name: [*_as_constraints(shared[p.name]), *([NONE] if p.default is None else [])]
                 for p in _named(target) if p.name in shared}
        return validate_params(table, owner=owner)(target)

    return decorate

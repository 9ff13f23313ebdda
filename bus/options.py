"""Typed, frozen dataclasses from TOML tables: how every config table of linebus is read.

A table is described once, as a dataclass whose annotations say what each key takes; ``from_table``
checks a decoded table against it and builds the instance, or raises ``ConfigError`` naming the
table, the key and what was wrong. ``bus.config`` reads a line's ``[broker]``, ``[supervisor]``,
``[[simulator]]`` and ``[[actor]]`` tables with it, and every actor its ``[actor.options]``::

    @options
    class ThermometerOptions:
        address: Annotated[str, NON_BLANK, Example('address = "192.168.1.40:502"')]
        password: Secret | None = None
        poll_s: Seconds = 1.0
        channels: tuple[int, ...] = (1,)
        mode: Literal["fast", "precise"] = "precise"

    config = from_table(ThermometerOptions, self.options, f"thermometer {name}", noun="option")

The rules:

- Unknown keys are errors (a typo must not silently fall back to a default); a field without a
  default is required.
- Types are exact: ``bool`` takes only true/false, ``int`` only integers (not 1.5, not true),
  ``float`` integers or floats (stored as float), ``str`` only strings; ``Path`` takes a string;
  an ``Enum`` or ``Literal`` one of its values; ``tuple[X, ...]`` an array of X; ``dict`` a table;
  ``X | None`` also None (from Python callers: TOML has no null); ``A | B`` either.
- ``Annotated`` metadata adds rules: ``Range`` (``Seconds`` is a positive float, ``Port`` an
  integer in 1..65535), ``Check`` (any predicate, with the words of its error), ``SECRET`` (the
  value never appears in a repr, an error message or ``redacted``), ``Example`` (shown when the
  key is missing) and ``FLATTEN`` (a dataclass field whose keys sit in the same table: an actor's
  options and its driver's settings are one flat table, built into two dataclasses).
- Errors read ``<where>: <key> must be <what>, got <value>`` (secrets shown as ``***``),
  ``<where>: missing required <noun> 'key' (e.g. ...)`` and
  ``<where>: unknown <noun>(s) [...]; known: [...]``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal, TypeVar, dataclass_transform

from bus.errors import ConfigError

__all__ = [
    "FLATTEN",
    "NON_BLANK",
    "REDACTED",
    "SECRET",
    "Check",
    "Example",
    "NonNegativeSeconds",
    "Port",
    "PositiveInt",
    "Range",
    "Seconds",
    "Secret",
    "from_table",
    "known_keys",
    "options",
    "redacted",
]

T = TypeVar("T")

#: What a secret is shown as (the same mark as ``bus.logs`` uses in log lines).
REDACTED = "***"


class _Marker(enum.Enum):
    SECRET = "secret"
    FLATTEN = "flatten"


#: ``Annotated[str, SECRET]``: never shown (repr, errors, ``redacted``).
SECRET = _Marker.SECRET
#: ``Annotated[SomeDataclass, FLATTEN]``: that dataclass's keys are read from the same table.
FLATTEN = _Marker.FLATTEN


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """Bounds of a number: ``gt`` (exclusive) or ``ge`` below, ``le`` above."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None

    def check(self, value: float) -> str | None:
        """None if ``value`` is in range, else what it must be ("be positive")."""
        if (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.le is None or value <= self.le)
        ):
            return None
        return f"be {self.describe()}"

    def describe(self) -> str:
        """The range in words: "positive", "at least 1", "between 1 and 65535"."""
        if self.ge is not None and self.le is not None:
            return f"between {self.ge:g} and {self.le:g}"
        parts = []
        if self.gt is not None:
            parts.append("positive" if self.gt == 0 else f"above {self.gt:g}")
        if self.ge is not None:
            parts.append("zero or more" if self.ge == 0 else f"at least {self.ge:g}")
        if self.le is not None:
            parts.append(f"at most {self.le:g}")
        return " and ".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """A rule no type says: ``test(value)`` must hold; ``must`` completes "<key> must ..."."""

    test: Callable[[Any], bool]
    must: str


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    """How the key is written, shown when it is missing: ``Example('host = "192.168.1.30"')``."""

    text: str


#: A string with something in it besides blanks.
NON_BLANK = Check(lambda text: bool(text.strip()), "not be empty")

#: A duration in seconds, above zero.
Seconds = Annotated[float, Range(gt=0)]
#: A duration in seconds that may be zero ("at once").
NonNegativeSeconds = Annotated[float, Range(ge=0)]
#: A count or size, above zero.
PositiveInt = Annotated[int, Range(gt=0)]
#: A TCP or UDP port number.
Port = Annotated[int, Range(ge=1, le=65535)]
#: A password or token: checked like any string, never shown.
Secret = Annotated[str, SECRET]


class _Invalid(Exception):
    """A value does not fit its type or rule; the message completes "<key> must ..."."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    """One field of an options dataclass, as ``from_table`` sees it."""

    name: str
    tp: Any
    rules: tuple[Any, ...]
    required: bool
    secret: bool

    @property
    def flatten(self) -> bool:
        return FLATTEN in self.rules


@dataclass_transform(
    frozen_default=True, kw_only_default=True, field_specifiers=(dataclasses.field,)
)
def options(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, slotted, keyword-only dataclass whose repr shows secrets as ``***``."""
    made = dataclasses.dataclass(frozen=True, slots=True, kw_only=True, repr=False)(cls)
    # Set on the class after the fact (``dataclass`` would otherwise write its own repr).
    type.__setattr__(made, "__repr__", _repr)
    return made


def _repr(self: object) -> str:
    shown = ", ".join(f"{key}={value!r}" for key, value in _shown(self).items())
    return f"{type(self).__name__}({shown})"


def _shown(instance: object) -> dict[str, Any]:
    """The fields of a dataclass instance by name, secrets replaced by ``REDACTED``."""
    if not dataclasses.is_dataclass(instance) or isinstance(instance, type):
        raise TypeError(f"not a dataclass instance: {instance!r}")
    secret = {spec.name for spec in _specs(type(instance)) if spec.secret}
    shown: dict[str, Any] = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        shown[f.name] = REDACTED if f.name in secret and value is not None else value
    return shown


def redacted(instance: object) -> dict[str, Any]:
    """A dataclass instance as a dict (nested ones too), its secrets replaced by ``***``.

    For showing a configuration (``describe``, a log line, a support bundle) without its secrets.
    """
    return {
        key: redacted(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type)
        else value
        for key, value in _shown(instance).items()
    }


def known_keys(cls: type) -> list[str]:
    """The keys a table for ``cls`` may have (those of flattened fields included), sorted."""
    keys: list[str] = []
    for spec in _specs(cls):
        keys.extend(known_keys(spec.tp) if spec.flatten else [spec.name])
    return sorted(keys)


def from_table(cls: type[T], table: object, where: str, *, noun: str = "key") -> T:
    """Check ``table`` against the dataclass ``cls`` and build it.

    Args:
        cls: A dataclass whose annotations describe the table (see the module docstring).
        table: The decoded TOML table (a dict).
        where: Names the table in errors: ``"line.toml [broker]"``, ``"flux p1"``.
        noun: What a key is called in errors: ``"key"`` in the line config, ``"option"`` for
            an actor's options.

    Raises:
        ConfigError: ``table`` is not a table, has a key ``cls`` does not know, lacks a required
            key, or has a value of the wrong type or out of range.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(known_keys(cls)))
    if unknown:
        raise ConfigError(f"{where}: unknown {noun}(s) {unknown}; known: {known_keys(cls)}")
    return _build(cls, table, where, noun)


def _build(cls: type[T], table: Mapping[str, Any], where: str, noun: str) -> T:
    values: dict[str, Any] = {}
    for spec in _specs(cls):
        if spec.flatten:
            values[spec.name] = _build(spec.tp, table, where, noun)
        elif spec.name in table:
            values[spec.name] = _value(spec, table[spec.name], where)
        elif spec.required:
            examples = [rule.text for rule in spec.rules if isinstance(rule, Example)]
            hint = f" (e.g. {examples[0]})" if examples else ""
            raise ConfigError(f"{where}: missing required {noun} {spec.name!r}{hint}")
    return cls(**values)


def _value(spec: _Spec, value: Any, where: str) -> Any:
    try:
        return _convert(spec.tp, spec.rules, value, f"{where} {spec.name}")
    except _Invalid as exc:
        shown = REDACTED if spec.secret else _toml(value)
        raise ConfigError(f"{where}: {spec.name} must {exc}, got {shown}") from None


def _toml(value: Any) -> str:
    """A value as the config file spells it (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _convert(tp: Any, rules: tuple[Any, ...], value: Any, where: str) -> Any:
    """``value`` as a ``tp``, after its rules; raises _Invalid("<what it must be>")."""
    if typing.get_origin(tp) is Annotated:
        tp, *more = typing.get_args(tp)
        rules = (*rules, *more)
    converted = _typed(tp, value, where)
    if converted is None:
        return None
    for rule in rules:
        if isinstance(rule, Range) and (problem := rule.check(converted)) is not None:
            raise _Invalid(problem)
        if isinstance(rule, Check) and not rule.test(converted):
            raise _Invalid(rule.must)
    return converted


def _typed(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        arms = [arm for arm in typing.get_args(tp) if arm is not type(None)]
        if value is None and len(arms) < len(typing.get_args(tp)):
            return None
        if len(arms) == 1:  # X | None: X's own words ("be positive")
            return _convert(arms[0], (), value, where)
        for arm in arms:
            try:
                return _convert(arm, (), value, where)
            except _Invalid:
                continue
        raise _Invalid(f"be {_describe(tp)}")
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise _Invalid(f"be {_describe(tp)}")
    if origin is tuple:
        item, *rest = typing.get_args(tp)
        if rest != [Ellipsis] or not isinstance(value, (list, tuple)):
            raise _Invalid(f"be {_describe(tp)}")
        try:
            return tuple(_convert(item, (), element, where) for element in value)
        except _Invalid:
            raise _Invalid(f"be {_describe(tp)}") from None
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Invalid(f"be {_describe(tp)}")
    if not isinstance(tp, type):
        raise TypeError(f"{where}: options cannot be of type {tp!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            pass
    elif issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
    elif dataclasses.is_dataclass(tp):
        try:
            return from_table(tp, value, where)
        except ConfigError as exc:
            raise _Invalid(f"be a valid table ({exc.message})") from None
    else:
        raise TypeError(f"{where}: options cannot be of type {tp!r}")
    raise _Invalid(f"be {_describe(tp)}")


def _describe(tp: Any) -> str:
    """What a value of ``tp`` is, in the words of a TOML file: "an integer", "true or false"."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _describe(typing.get_args(tp)[0])
    if origin is Literal:
        return f"one of {list(typing.get_args(tp))}"
    if origin is tuple:
        return f"a list of {_plural(typing.get_args(tp)[0])}"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(arm) for arm in typing.get_args(tp) if arm is not type(None))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"one of {[member.value for member in tp]}"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path (a string)"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(tp, "a table")


def _plural(tp: Any) -> str:
    described = _describe(tp)
    for article in ("an ", "a "):
        if described.startswith(article):
            return described.removeprefix(article) + "s"
    return described


def _specs(cls: type) -> list[_Spec]:
    """The fields of ``cls`` with their resolved types and rules (cached per class)."""
    cached = _SPECS.get(cls)
    if cached is not None:
        return cached
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls, include_extras=True)
    specs = []
    for f in dataclasses.fields(cls):
        tp, rules = hints[f.name], ()
        if typing.get_origin(tp) is Annotated:
            tp, *found = typing.get_args(tp)
            rules = tuple(found)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        secret = (
            SECRET in rules
            or any(  # Secret | None
                SECRET in typing.get_args(arm)[1:]
                for arm in typing.get_args(tp)
                if typing.get_origin(arm) is Annotated
            )
        )
        specs.append(_Spec(f.name, tp, rules, required, secret))
    _SPECS[cls] = specs
    return specs


_SPECS: dict[type, list[_Spec]] = {}

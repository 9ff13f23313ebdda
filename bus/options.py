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
- A rule across keys (``upstream = "mqtt"`` needs an ``mqtt`` table) goes in the class's
  ``__post_init__``, raising ``ConfigError`` with the words after ``<where>: ``; ``from_table``
  puts the table's name in front.
- A secret ``KEY`` may instead be given as ``KEY_file`` (a file holding it, which must not be
  readable by other users; a trailing newline is dropped) or ``KEY_env`` (the name of an
  environment variable holding it), so that passwords and tokens need not sit in the config:
  ``password_file = "/etc/linebus/printer-password"``. At most one of the three; a required
  secret is satisfied by any of them. Relative paths are taken from the working directory, as
  the other paths of an actor's options.
- Errors read ``<where>: <key> must be <what>, got <value>`` (secrets shown as ``***``),
  ``<where>: missing required <noun> 'key' (e.g. ...)`` and
  ``<where>: unknown <noun>(s) [...]; known: [...]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import secrets
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal, TypeVar, dataclass_transform

from bus.errors import ConfigError
from bus.security.files import mode_problem, write_private_file

__all__ = [
    "FLATTEN",
    "NON_BLANK",
    "REDACTED",
    "SECRET",
    "SECRET_ENV_SUFFIX",
    "SECRET_FILE_SUFFIX",
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
    "secret_from_file",
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


#: The suffixes of the keys that give a secret from a file or an environment variable.
SECRET_FILE_SUFFIX = "_file"
SECRET_ENV_SUFFIX = "_env"


def known_keys(cls: type) -> list[str]:
    """The keys a table for ``cls`` may have (those of flattened fields included, and the
    ``_file``/``_env`` forms of secrets), sorted."""
    keys: list[str] = []
    for spec in _specs(cls):
        if spec.flatten:
            keys.extend(known_keys(spec.tp))
        elif spec.secret:
            keys.extend(_secret_keys(spec.name))
        else:
            keys.append(spec.name)
    return sorted(keys)


def _secret_keys(name: str) -> tuple[str, str, str]:
    return name, f"{name}{SECRET_FILE_SUFFIX}", f"{name}{SECRET_ENV_SUFFIX}"


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
        elif spec.secret and (found := _secret_source(spec.name, table, where)) is not None:
            values[spec.name] = _value(spec, found, where)
        elif spec.name in table:
            values[spec.name] = _value(spec, table[spec.name], where)
        elif spec.required:
            examples = [rule.text for rule in spec.rules if isinstance(rule, Example)]
            hint = f" (e.g. {examples[0]})" if examples else ""
            if spec.secret:
                _, file_key, env_key = _secret_keys(spec.name)
                hint = f" (or {file_key!r}, {env_key!r}){hint}"
            raise ConfigError(f"{where}: missing required {noun} {spec.name!r}{hint}")
    try:
        return cls(**values)
    except ConfigError as exc:  # a rule across keys, checked by the class's __post_init__
        raise ConfigError(f"{where}: {exc.message}") from None


def _secret_source(name: str, table: Mapping[str, Any], where: str) -> Any:
    """The value of secret ``name`` given as ``NAME_file`` or ``NAME_env``; None when it is given
    as ``NAME`` (or not at all). The secret itself never appears in an error."""
    value_key, file_key, env_key = _secret_keys(name)
    given = [key for key in (value_key, file_key, env_key) if key in table]
    if len(given) > 1:
        raise ConfigError(f"{where}: give one of {given}, not several")
    if file_key in table:
        return _read_secret_file(table[file_key], f"{where}: {file_key}")
    if env_key in table:
        variable = table[env_key]
        if not isinstance(variable, str) or not variable:
            raise ConfigError(f"{where}: {env_key} must be the name of an environment variable")
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(f"{where}: {env_key} names ${variable}, which is not set or empty")
        return value
    return None


def secret_from_file(path: str | os.PathLike[str], *, create: bool = False) -> str:
    """The secret held in the file at ``path`` (as ``KEY_file`` reads it).

    With ``create``, a missing file is first written with a new random secret, 0600 (what the
    demo's simulators do for the device password and the provisioning token, so that no secret
    sits in a config or a command line).

    Raises:
        ConfigError: the file is missing (without ``create``), unreadable, readable by other
            users, empty or not UTF-8.
    """
    if create and not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            write_private_file(path, secrets.token_urlsafe(18).encode() + b"\n")
    return _read_secret_file(os.fspath(path), "secret file")


def _read_secret_file(path: Any, where: str) -> str:
    if not isinstance(path, (str, PurePath)) or not str(path):
        raise ConfigError(f"{where} must be a path (a string)")
    try:
        with open(path, "rb") as handle:
            problem = mode_problem(os.fstat(handle.fileno()).st_mode)
            data = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{where}: {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if problem is not None:
        raise ConfigError(f"{where}: {path} is {problem}; run: chmod 600 {path}")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{where}: {path} is empty")
    return text


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

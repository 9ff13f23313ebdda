"""Declare actor commands as typed methods; validate arguments against their signatures.

``@command`` marks a method; ``CommandSpec.build`` reads its signature and type hints once, at
class creation, into a validator and the description ``describe`` serves. Supported annotations:
``str int float bool bytes None Any list dict``, ``list[X]``, ``dict[str, X]``, ``X | None``,
``Literal[...]``, and ``enum.Enum`` subclasses (sent as their value). A parameter annotated
``CommandContext`` is not an argument: the runtime passes the request's context there.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import time
import types
import typing
from collections import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, overload

from bus.errors import InvalidArguments

__all__ = ["CommandContext", "CommandSpec", "command", "command_table", "privileged_commands"]

_MISSING = inspect.Parameter.empty

#: The attribute ``@command`` sets on a method: its ``CommandMark``.
_MARK = "__linebus_command__"

_F = TypeVar("_F", bound=Callable[..., Any])


class CommandContext:
    """What a running command knows of its request: id, deadline, and a way to report progress.

    Declare a parameter of this type to receive it: ``async def flash(self, path: str, ctx: CommandContext)``.
    """

    __slots__ = ("_progress", "deadline", "msg_id")

    def __init__(self, msg_id: str, deadline: float, progress: Callable[[Any], object]) -> None:
        self.msg_id = msg_id
        self.deadline = deadline
        self._progress = progress

    def progress(self, data: Any) -> None:
        """Send a progress update (any msgpack value, e.g. ``{"done": n, "total": m}``) to the caller."""
        self._progress(data)

    def byte_progress(self) -> Callable[[int, int], None]:
        """A ``(done, total)`` callback for a driver's transfer that reports
        ``{"done", "total"}`` at most once per percent (always the first and the last)."""
        last = -1

        def report(done: int, total: int) -> None:
            nonlocal last
            percent = 100 if total == 0 else done * 100 // total
            if percent != last or done == total:
                last = percent
                self._progress({"done": done, "total": total})

        return report

    def remaining(self) -> float:
        """Seconds left before the request's deadline."""
        return self.deadline - time.monotonic()


@dataclass(frozen=True, slots=True)
class CommandMark:
    """What ``@command`` records on a method: its wire name, whether it runs concurrently, and
    whether it is privileged."""

    name: str
    concurrent: bool
    privileged: bool = False


@overload
def command(fn: _F, /) -> _F: ...


@overload
def command(
    *, name: str | None = None, concurrent: bool = False, privileged: bool = False
) -> Callable[[_F], _F]: ...


def command(
    fn: _F | None = None,
    /,
    *,
    name: str | None = None,
    concurrent: bool = False,
    privileged: bool = False,
) -> _F | Callable[[_F], _F]:
    """Mark a method as a bus command: ``@command``, or ``@command(name=..., concurrent=...,
    privileged=...)``.

    The method is returned unchanged (its signature stays what type checkers see).

    Args:
        name: The command's wire name; the method name by default (so facades keep seed names).
        concurrent: Run beside other commands instead of one at a time (only for commands that
            do not use the device, or whose driver is safe to share).
        privileged: The command changes a device, its files, its firmware, its trust or its
            credentials (or writes data others rely on). On a secured line only the identities
            the access list allows (by default, the operators) may call it, and every call is
            audited. The actor's READY tells the broker which commands are privileged.
    """

    def mark(f: _F) -> _F:
        setattr(f, _MARK, CommandMark(name or f.__name__, concurrent, privileged))
        return f

    return mark(fn) if fn is not None else mark


def command_mark(value: object) -> CommandMark | None:
    """The mark ``@command`` left on ``value``, or None for anything else."""
    mark = getattr(value, _MARK, None)
    return mark if isinstance(mark, CommandMark) else None


def command_table(cls: type) -> dict[str, CommandSpec]:
    """The commands of a class and its bases by wire name; a subclass's method replaces the
    base's command of the same method name (and the base's wire name with it)."""
    table: dict[str, CommandSpec] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if callable(value) and command_mark(value) is not None:
                spec = CommandSpec.build(value)
                table = {k: v for k, v in table.items() if v.method_name != attr}
                table[spec.name] = spec
    return table


def privileged_commands(table: dict[str, CommandSpec]) -> list[str]:
    """The wire names of the privileged commands of a command table, sorted."""
    return sorted(name for name, spec in table.items() if spec.privileged)


def _type_name(tp: Any) -> str:
    if tp is Any or tp is _MISSING:
        return "any"
    if tp is type(None):
        return "nil"
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(repr(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


def _check(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, value converted to the declared type)."""
    if tp is Any or tp is _MISSING or tp is object:
        return True, value
    if tp is type(None) or tp is None:
        return value is None, value
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            ok, converted = _check(value, option)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in get_args(tp), value
    if origin in (list, tuple, abc.Sequence):  # List[X] and Sequence[X] have these origins
        if not isinstance(value, list):
            return False, value
        (item_tp, *_) = get_args(tp) or (Any,)
        if item_tp is Any:
            return True, value  # nothing to check or convert per item (bulk lists stay cheap)
        out = []
        for item in value:
            ok, converted = _check(item, item_tp)
            if not ok:
                return False, value
            out.append(converted)
        return True, out
    if origin in (dict, abc.Mapping):  # Dict[K, V] and Mapping[K, V] have these origins
        if not isinstance(value, dict):
            return False, value
        _, val_tp = get_args(tp) or (Any, Any)
        converted_map = {}
        for key, item in value.items():
            ok, converted = _check(item, val_tp)
            if not isinstance(key, str) or not ok:
                return False, value
            converted_map[key] = converted
        return True, converted_map
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)), (
            float(value) if isinstance(value, (int, float)) else value
        )
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bytes:
        return isinstance(value, (bytes, bytearray)), bytes(value) if isinstance(
            value, bytearray
        ) else value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value == member.value or value == member.name:
                return True, member
        return False, value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _compile(tp: Any) -> Callable[[Any], tuple[bool, Any]] | None:
    """A checker for one annotation, specialised for the common scalar types (hot path)."""
    if tp is Any or tp is _MISSING or tp is object:
        return None
    if tp is str or tp is int or tp is bool or tp is dict or tp is list:
        exact = tp
        # type() identity rejects bool where int is declared, as the wire contract says.
        return lambda v: (
            type(v) is exact or (exact is not int and exact is not bool and isinstance(v, exact)),
            v,
        )
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if len(options) == 2 and type(None) in options:
            # ``X | None``, the usual optional argument: None at once, else X's own checker.
            (inner,) = [option for option in options if option is not type(None)]
            check = _compile(inner)
            if check is None:
                return None
            return lambda v: (True, None) if v is None else _checked(check, v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        with contextlib.suppress(TypeError):  # a member's value is unhashable: scan instead
            return _enum_checker(tp)
    return lambda v: _check(v, tp)


def _checked(check: Callable[[Any], tuple[bool, Any]], v: Any) -> tuple[bool, Any]:
    """``check(v)``, with ``v`` itself (not a conversion of it) when it fails, as ``_check``."""
    ok, converted = check(v)
    return (True, converted) if ok else (False, v)


def _enum_checker(tp: type[enum.Enum]) -> Callable[[Any], tuple[bool, Any]]:
    """``_check`` for an enum as one dict lookup: each member by its value and by its name.

    Built from the last member to the first, so where a value or name is shared the first
    member wins, as in ``_check``'s scan; an unhashable value matches no member.
    """
    members: dict[Any, enum.Enum] = {}
    for member in reversed(list(tp)):
        members[member.name] = member
        members[member.value] = member

    def check(v: Any) -> tuple[bool, Any]:
        try:
            member = members.get(v)
        except TypeError:  # unhashable: no member's value or name equals it
            return False, v
        return (True, member) if member is not None else (False, v)

    return check


@dataclass(slots=True)
class Param:
    """One argument of a command."""

    name: str
    annotation: Any
    default: Any
    kw_only: bool = False
    check: Callable[[Any], tuple[bool, Any]] | None = None

    def __post_init__(self) -> None:
        self.check = _compile(self.annotation)

    @property
    def required(self) -> bool:
        """True when the caller must give this argument."""
        return self.default is _MISSING


@dataclass(slots=True)
class CommandSpec:
    """A command's wire name, method, arguments and documentation."""

    name: str
    method_name: str
    is_async: bool
    concurrent: bool
    params: list[Param]
    context_param: str | None
    doc: str
    returns: str
    accepts_any: bool = False
    #: Only the identities the access list allows may call it (see ``command``).
    privileged: bool = False
    index: dict[str, Param] = field(default_factory=dict)
    #: A plain function without a ``CommandContext``: the runtime calls it inline, not as a task.
    inline: bool = False

    @classmethod
    def build(cls, method: Callable[..., Any]) -> CommandSpec:
        """Read a marked method's signature and hints."""
        mark = command_mark(method)
        if mark is None:
            raise TypeError(f"{method.__qualname__} is not marked with @command")
        try:
            hints = typing.get_type_hints(method)
        except Exception:  # unresolvable forward references: fall back to no type checks
            hints = {}
        sig = inspect.signature(method)
        params: list[Param] = []
        context_param = None
        accepts_any = False
        for p in list(sig.parameters.values())[1:]:  # skip self
            annotation = hints.get(p.name, p.annotation)
            if annotation is CommandContext:
                context_param = p.name
                continue
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                accepts_any = True
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            params.append(
                Param(p.name, annotation, p.default, p.kind is inspect.Parameter.KEYWORD_ONLY)
            )
        spec = cls(
            name=mark.name,
            method_name=method.__name__,
            is_async=inspect.iscoroutinefunction(method),
            concurrent=mark.concurrent,
            params=params,
            context_param=context_param,
            doc=inspect.cleandoc(method.__doc__ or ""),
            returns=_type_name(hints.get("return", _MISSING)),
            accepts_any=accepts_any,
            privileged=mark.privileged,
        )
        spec.index = {p.name: p for p in params}
        spec.inline = not spec.is_async and context_param is None
        return spec

    def bind(self, args: Any) -> dict[str, Any]:
        """Validate ``args`` (a map) and return the keyword arguments to call the method with.

        Raises:
            InvalidArguments: naming the argument that is unknown, missing or of the wrong type.
        """
        if not isinstance(args, dict):
            raise InvalidArguments.about(
                f"arguments must be a map of name to value, got {type(args).__name__}",
                argument=None,
                problem="type",
                expected="map",
            )
        out: dict[str, Any] = {}
        for key, value in args.items():
            param = self.index.get(key)
            if param is None:
                if self.accepts_any:
                    out[key] = value
                    continue
                known = [p.name for p in self.params]
                raise InvalidArguments.about(
                    f"unknown argument {key!r} (arguments: {', '.join(known) or 'none'})",
                    argument=key,
                    problem="unknown",
                    expected=None,
                    known=known,
                )
            check = param.check
            if check is None:
                out[key] = value
                continue
            ok, converted = check(value)
            if not ok:
                expected = _type_name(param.annotation)
                raise InvalidArguments.about(
                    f"argument {key!r} must be {expected}, got {type(value).__name__} {_short(value)}",
                    argument=key,
                    problem="type",
                    expected=expected,
                )
            out[key] = converted
        for param in self.params:
            if param.required and param.name not in out:
                expected = _type_name(param.annotation)
                raise InvalidArguments.about(
                    f"missing required argument {param.name!r} ({expected})",
                    argument=param.name,
                    problem="missing",
                    expected=expected,
                )
        return out

    def describe(self) -> dict[str, Any]:
        """The description ``describe`` serves for this command."""
        return {
            "doc": self.doc,
            "args": [
                {
                    "name": p.name,
                    "type": _type_name(p.annotation),
                    "required": p.required,
                    **({} if p.required else {"default": _plain(p.default)}),
                }
                for p in self.params
            ],
            "returns": self.returns,
            "concurrent": self.concurrent,
            "progress": self.context_param is not None,
            "privileged": self.privileged,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

"""Command declarations (bus.commands): argument validation against type hints, and the
description `describe` serves."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pytest

from bus import commands
from bus.actor import Actor
from bus.commands import CommandContext, CommandSpec, command, privileged_commands
from bus.errors import InvalidArguments

_EMPTY = inspect.Parameter.empty


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def spec_for(annotation: Any, default: Any = _EMPTY) -> CommandSpec:
    """The spec of a command with one argument ``x`` of ``annotation`` (and ``default``)."""
    if default is _EMPTY:

        def method(self: Any, x: Any) -> None: ...

    else:

        def method(self: Any, x: Any = default) -> None: ...

    method.__annotations__ = {"x": annotation, "return": None}
    return CommandSpec.build(command(method))


def rejection(spec: CommandSpec, args: Any) -> InvalidArguments:
    """The InvalidArguments ``spec.bind(args)`` raises."""
    with pytest.raises(InvalidArguments) as info:
        spec.bind(args)
    return info.value


# (annotation, value, converted value) that validate.
ACCEPTED = [
    (int, 3, 3),
    (int, -(2**40), -(2**40)),
    (float, 2.5, 2.5),
    (float, 1, 1.0),
    (bool, True, True),
    (str, "x", "x"),
    (bytes, b"\x00\x01", b"\x00\x01"),
    (bytes, bytearray(b"ab"), b"ab"),
    (list, [1, "a"], [1, "a"]),
    (dict, {"a": 1}, {"a": 1}),
    (list[int], [1, 2], [1, 2]),
    (list[int], [], []),
    (list[float], [1, 2.5], [1.0, 2.5]),
    (list[Color], ["red", "blue"], [Color.RED, Color.BLUE]),
    (dict[str, int], {"a": 1, "b": 2}, {"a": 1, "b": 2}),
    (int | None, None, None),
    (int | None, 3, 3),
    (float | None, 3, 3.0),
    (Literal["fast", "slow"], "fast", "fast"),
    (Color, "blue", Color.BLUE),
    (Color, "RED", Color.RED),  # by name too
    (Color | None, None, None),
    (Color | None, "red", Color.RED),
    (str | None, "x", "x"),
    (bytes | None, bytearray(b"a"), b"a"),
    (list[int] | None, [1], [1]),
    (Any, object, object),
    (None, None, None),
]

# (annotation, value) that do not.
REJECTED = [
    (Sequence[int], [1, "2"]),
    (Sequence[int], "12"),
    (Mapping[str, int], {"a": "1"}),
    (Mapping[str, int], [("a", 1)]),
    (int, True),
    (int, "3"),
    (int, 3.0),
    (int, None),
    (float, True),
    (float, "1.5"),
    (bool, 1),
    (str, b"x"),
    (str, 1),
    (bytes, "ab"),
    (list, "ab"),
    (dict, [("a", 1)]),
    (list[int], [1, "2"]),
    (list[int], [True]),
    (list[int], {"a": 1}),
    (dict[str, int], {"a": "1"}),
    (dict[str, int], {1: 1}),
    (dict[str, int], [1]),
    (int | None, "3"),
    (Literal["fast", "slow"], "medium"),
    (Color, "green"),
    (Color, ["red"]),  # unhashable: no member is equal to it
    (Color, {"a": 1}),
    (Color | None, "green"),
    (str | None, 1),
    (float | None, True),
    (None, 0),
]


def _id(value: Any) -> str:
    return getattr(value, "__name__", None) or repr(value)


class TestTypes:
    @pytest.mark.parametrize(
        "annotation, value, converted", ACCEPTED, ids=[f"{_id(a)}-{v!r}" for a, v, _ in ACCEPTED]
    )
    def test_accepted_and_converted(self, annotation: Any, value: Any, converted: Any) -> None:
        """A value of the declared type is accepted and passed on converted to that type."""
        bound = spec_for(annotation).bind({"x": value})
        assert bound == {"x": converted}
        assert type(bound["x"]) is type(converted)

    @pytest.mark.parametrize(
        "annotation, value", REJECTED, ids=[f"{_id(a)}-{v!r}" for a, v in REJECTED]
    )
    def test_rejected_naming_the_argument_and_type(self, annotation: Any, value: Any) -> None:
        """A value of another type is invalid_arguments naming the argument and the expected type."""
        error = rejection(spec_for(annotation), {"x": value})
        assert error.code == "invalid_arguments"
        assert error.details["argument"] == "x"
        assert error.details["problem"] == "type"
        assert error.details["expected"]
        assert "'x'" in error.message

    @pytest.mark.parametrize(
        "annotation",
        [str | None, float | None, Color, Color | None, list[int] | None, Literal["a"] | None],
        ids=_id,
    )
    def test_compiled_checks_decide_as_the_general_one(self, annotation: Any) -> None:
        """The checkers specialised for ``X | None`` and enums give ``_check``'s answer (and
        the same value, converted or not) for values of every kind."""
        values = [None, "a", "red", "RED", "BLUE", 1, 1.5, True, b"x", ["a"], [1], {"a": 1}]
        check = commands._compile(annotation)
        assert check is not None
        for value in values:
            got, want = check(value), commands._check(value, annotation)
            assert got == want and type(got[1]) is type(want[1]), value

    def test_dict_values_are_converted_like_list_items(self) -> None:
        """dict[str, Color] values arrive as Color members, as list[Color] items do."""
        assert spec_for(dict[str, Color]).bind({"x": {"a": "red"}}) == {"x": {"a": Color.RED}}


class TestArguments:
    def test_unknown_argument_is_named(self) -> None:
        """An argument the command does not declare is invalid_arguments naming it."""
        error = rejection(spec_for(int), {"x": 1, "y": 2})
        assert (error.details["argument"], error.details["problem"]) == ("y", "unknown")
        assert "'y'" in error.message and "x" in error.message  # lists the arguments there are

    def test_missing_argument_is_named(self) -> None:
        """A required argument left out is invalid_arguments naming it."""
        error = rejection(spec_for(int), {})
        assert error.details == {"argument": "x", "problem": "missing", "expected": "int"}
        assert "'x'" in error.message

    def test_default_makes_an_argument_optional(self) -> None:
        """An argument with a default may be left out (the method's default applies)."""
        assert spec_for(int, default=7).bind({}) == {}

    def test_arguments_must_be_a_map(self) -> None:
        """Arguments that are not a map are invalid_arguments with no argument named."""
        error = rejection(spec_for(int), [1])
        assert error.details == {"argument": None, "problem": "type", "expected": "map"}

    def test_var_keyword_accepts_any_extra_argument(self) -> None:
        """A command with **kwargs takes arguments it does not name, unchecked."""

        @command
        def method(self: Any, x: int, **options: Any) -> None: ...

        spec = CommandSpec.build(method)
        assert spec.bind({"x": 1, "speed": "fast"}) == {"x": 1, "speed": "fast"}
        assert rejection(spec, {"x": "1"}).details["argument"] == "x"

    def test_context_parameter_is_not_an_argument(self) -> None:
        """A CommandContext parameter is filled by the runtime, never by the caller."""

        @command
        async def method(self: Any, steps: int, ctx: CommandContext) -> None: ...

        spec = CommandSpec.build(method)
        assert spec.context_param == "ctx"
        assert [p.name for p in spec.params] == ["steps"]
        assert rejection(spec, {"steps": 1, "ctx": None}).details == {
            "argument": "ctx",
            "problem": "unknown",
            "expected": None,
            "known": ["steps"],
        }


class Mover(Actor):
    """Moves an axis."""

    kind = "mover"

    @command
    def move(
        self,
        x: float,
        speed: Literal["fast", "slow"] = "slow",
        color: Color = Color.RED,
        tags: list[str] | None = None,
    ) -> dict[str, float]:
        """Move the axis to ``x``.

        Blocks until the axis stops.
        """
        return {"x": x}

    @command(name="Home", concurrent=True)
    async def home(self, ctx: CommandContext) -> None:
        """Drive to the home switch, reporting progress."""


class TestDescribe:
    def test_command_description(self) -> None:
        """describe lists each argument's name, type, whether it is required and its default."""
        assert Mover.commands["move"].describe() == {
            "doc": "Move the axis to ``x``.\n\nBlocks until the axis stops.",
            "args": [
                {"name": "x", "type": "float", "required": True},
                {"name": "speed", "type": "'fast' | 'slow'", "required": False, "default": "slow"},
                {"name": "color", "type": "'red' | 'blue'", "required": False, "default": "red"},
                {"name": "tags", "type": "list[str] | nil", "required": False, "default": None},
            ],
            "returns": "dict[str, float]",
            "concurrent": False,
            "progress": False,
            "privileged": False,
        }

    def test_wire_name_concurrency_and_progress(self) -> None:
        """A command's wire name, concurrency and progress flag come from its declaration."""
        home = Mover.commands["Home"]
        assert home.method_name == "home"
        assert home.describe() == {
            "doc": "Drive to the home switch, reporting progress.",
            "args": [],
            "returns": "nil",
            "concurrent": True,
            "progress": True,
            "privileged": False,
        }

    def test_privileged_declaration(self) -> None:
        """``privileged=True`` marks the command, shows in its description, and is listed by
        ``privileged_commands``; built-in commands are not privileged."""

        class Press(Actor):
            kind = "press"

            @command(privileged=True)
            def wipe(self) -> None:
                """Erase the device."""

            @command(name="Load", privileged=True, concurrent=True)
            def load(self) -> None:
                """Load a program."""

            @command
            def status(self) -> str:
                """Read the state."""
                return "idle"

        assert Press.commands["wipe"].privileged is True
        assert Press.commands["wipe"].describe()["privileged"] is True
        assert Press.commands["Load"].concurrent is True
        assert Press.commands["status"].describe()["privileged"] is False
        assert privileged_commands(Press.commands) == ["Load", "wipe"]
        assert not Press.commands["ping"].privileged and not Press.commands["describe"].privileged

    def test_actor_description_lists_every_command(self) -> None:
        """An actor's describe names its kind and doc and every command, built-ins included."""
        description = Mover("m1").describe()
        assert (description["service"], description["kind"], description["doc"]) == (
            "m1",
            "mover",
            "Moves an axis.",
        )
        assert sorted(description["commands"]) == ["Home", "describe", "move", "ping", "replay"]

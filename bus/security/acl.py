"""Access lists: which identity may register, publish, subscribe and call what.

Parsed from plain dicts (a ``[security.acl]`` TOML table), precompiled, and asked by the broker
once per message it routes. Identities are key names (``keyring.Keyring``)::

    [security.acl]
    operators = ["alice", "mes"]            # may call privileged commands
    privileged = ["fr*.FR_Run*"]            # privileged beyond what the actors declare
    check_publish = true                    # false: the C proxy forwards events unchecked

    [security.acl.default]                  # every known identity not listed below
    register = ["{name}"]                   # these four values are the built-in defaults
    publish = ["{name}."]
    subscribe = [""]
    call = ["*.*"]

    [security.acl.identity.bench]           # keys set here replace the default's
    register = ["fr?"]
    publish = ["fr1.", "fr2."]
    call = ["*.*", "!flux*.*"]

Rules, one kind of list each, all of them "allow if some entry matches and no ``!`` entry does":

- ``register``: service-name globs. ``broker`` is never registrable.
- ``publish``: topic prefixes. ``presence.`` and ``_probe.`` are the broker's alone, whatever
  the rules say (a rule naming them is a parse error).
- ``subscribe``: topic prefixes; a subscription to prefix S is allowed if S starts with an allowed
  prefix and overlaps no ``!`` prefix (it would receive those topics). A subscription to one
  readiness probe (``_probe.<token>``, which carries no data) is always allowed.
- ``call``: ``service.command`` globs; the command is what follows the last dot (commands have no
  dots). ``*`` matches any run of characters (in a command: no dot), ``?`` one.
- ``{name}`` in any entry is the identity's own name.

Privileged commands (those the actors declare, the ``privileged`` globs, and ``broker.reload``)
also need the caller to be one of ``operators``. So by default every known identity reads
(subscribes to everything, calls every command that is not privileged), registers and publishes
under its own name only, and only operators change devices.

Cost: the rules of an identity are compiled once (one regex per list); a call decision is cached
per (identity, service, command, privileged), so the broker pays one dict lookup per request. A
publish check is two ``bytes.startswith`` with tuples, on the raw event frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from bus.security.errors import AclError

__all__ = [
    "BROKER_IDENTITY",
    "DEFAULT_RULES",
    "RESERVED_TOPICS",
    "Acl",
    "Decision",
    "Rules",
]

#: The service name (and event ``src``) of the broker; never registrable by an actor.
BROKER_IDENTITY: Final = "broker"
#: Topic prefixes only the broker publishes on.
RESERVED_TOPICS: Final = ("presence.", "_probe.")
#: Commands privileged whatever the actors declare.
BUILTIN_PRIVILEGED: Final = ("broker.reload",)
#: The rules of an identity that no table names (``{name}`` is replaced by its name).
DEFAULT_RULES: Final[Mapping[str, tuple[str, ...]]] = {
    "register": ("{name}",),
    "publish": ("{name}.",),
    "subscribe": ("",),
    "call": ("*.*",),
}
_RULE_KEYS: Final = frozenset(DEFAULT_RULES)
_ACL_KEYS: Final = frozenset({"operators", "privileged", "check_publish", "default", "identity"})
_NAME_CHARS = re.compile(r"^[A-Za-z0-9_.\-*?]*$")
_RESERVED_BYTES = tuple(t.encode() for t in RESERVED_TOPICS)
_PROBE = b"_probe."
_SAMPLE_NAME = "sample"  # the defaults are validated with this name in their {name} places
_CACHE_LIMIT = 65_536  # call decisions kept; hostile command names must not grow it forever


@dataclass(frozen=True, slots=True)
class Decision:
    """An access decision; true when allowed.

    Attributes:
        allowed: Whether the action may go ahead.
        reason: For a refusal, a sentence naming the identity and the action, fit for the message
            of a ``forbidden`` error; empty when allowed.
        rule: Which check refused: ``unknown_identity``, ``register``, ``reserved``, ``publish``,
            ``subscribe``, ``call``, ``privileged`` (empty when allowed).
    """

    allowed: bool
    reason: str = ""
    rule: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED: Final = Decision(True)


def _glob_regex(pattern: str, *, command_part: bool) -> str:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("[^.]*" if command_part else ".*")
        elif ch == "?":
            out.append("[^.]" if command_part else ".")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _compile(regexes: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{r})" for r in regexes)) if regexes else None


class _Globs:
    """Allow and deny globs over names (``register``) or ``service.command`` (``call``)."""

    __slots__ = ("_allow", "_deny", "entries")

    def __init__(self, entries: tuple[str, ...], *, calls: bool, where: str) -> None:
        self.entries = entries
        allow: list[str] = []
        deny: list[str] = []
        for entry in entries:
            text = entry[1:] if entry.startswith("!") else entry
            if not text or not _NAME_CHARS.match(text):
                raise AclError(
                    f"{where}: {entry!r} is not a pattern (letters, digits, '_', '.', '-', "
                    "and the wildcards '*' and '?')"
                )
            if calls:
                service, dot, cmd = text.rpartition(".")
                if not dot or not service or not cmd:
                    raise AclError(
                        f"{where}: {entry!r} must be 'service.command' (e.g. 'fr1.*' or '*.status')"
                    )
                regex = (
                    _glob_regex(service, command_part=False)
                    + r"\."
                    + _glob_regex(cmd, command_part=True)
                )
            else:
                regex = _glob_regex(text, command_part=False)
            (deny if entry.startswith("!") else allow).append(regex)
        self._allow = _compile(allow)
        self._deny = _compile(deny)

    def matches(self, text: str) -> bool:
        """True if an allow entry matches all of ``text`` and no deny entry does."""
        return (
            self._allow is not None
            and self._allow.fullmatch(text) is not None
            and (self._deny is None or self._deny.fullmatch(text) is None)
        )


class _Prefixes:
    """Allow and deny topic prefixes, kept as bytes to test raw event frames."""

    __slots__ = ("allow", "deny", "entries")

    def __init__(self, entries: tuple[str, ...], *, where: str, reserved_ok: bool) -> None:
        self.entries = entries
        allow: list[bytes] = []
        deny: list[bytes] = []
        for entry in entries:
            text = entry[1:] if entry.startswith("!") else entry
            if "\0" in text:
                raise AclError(f"{where}: {entry!r}: a topic prefix cannot contain NUL")
            if not reserved_ok and not entry.startswith("!") and text.startswith(RESERVED_TOPICS):
                raise AclError(
                    f"{where}: {entry!r}: only the broker publishes on {' and '.join(RESERVED_TOPICS)}"
                )
            (deny if entry.startswith("!") else allow).append(text.encode())
        self.allow = tuple(allow)
        self.deny = tuple(deny)

    @property
    def everything(self) -> bool:
        """True if these rules allow every topic (an empty allowed prefix, nothing denied)."""
        return b"" in self.allow and not self.deny


@dataclass(frozen=True, slots=True)
class Rules:
    """The compiled rules of one identity."""

    name: str
    operator: bool
    register: _Globs
    publish: _Prefixes
    subscribe: _Prefixes
    call: _Globs


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AclError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _rule_table(value: object, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise AclError(f"{where} must be a table")
    unknown = sorted(set(value) - _RULE_KEYS)
    if unknown:
        raise AclError(f"{where}: unknown key(s) {unknown}; known: {sorted(_RULE_KEYS)}")
    return {key: _strings(v, f"{where}.{key}") for key, v in value.items()}


class Acl:
    """A parsed access list; build it with ``Acl.parse``.

    Args:
        default: Rule templates for identities no table names (``{name}`` placeholders).
        tables: Identity name -> the rule lists its table sets.
        operators: Identities that may call privileged commands.
        privileged: ``service.command`` globs privileged beyond the actors' own declarations.
        check_publish: Whether the broker checks each event's topic (see ``checks_publish``).
        known: The identities the keyring grants now; any other is refused everything. None: do
            not check (every identity the ZAP handler let in is known).
        where: The config location, for error messages.
    """

    def __init__(
        self,
        default: Mapping[str, tuple[str, ...]],
        tables: Mapping[str, Mapping[str, tuple[str, ...]]],
        *,
        operators: Iterable[str] = (),
        privileged: Iterable[str] = (),
        check_publish: bool = True,
        known: Iterable[str] | None = None,
        where: str = "[security.acl]",
    ) -> None:
        self._where = where
        self._default = {**DEFAULT_RULES, **default}
        self._tables = {name: dict(table) for name, table in tables.items()}
        self.operators = frozenset(operators)
        self._privileged = _Globs(
            (*BUILTIN_PRIVILEGED, *privileged), calls=True, where=f"{where}.privileged"
        )
        self._check_publish = check_publish
        self.known = None if known is None else frozenset(known)
        self._rules: dict[str, Rules] = {}
        self._calls: dict[tuple[str, str, str, bool], Decision] = {}
        # Compile every table now, so that a bad pattern fails at load, not at the first call;
        # the defaults are compiled for a sample name (the rules of each identity come later).
        compiled = [self._build(_SAMPLE_NAME), *(self._rules_for(name) for name in self._tables)]
        self._subscribe_everything = all(rules.subscribe.everything for rules in compiled)

    @classmethod
    def parse(
        cls,
        data: Mapping[str, object] | None,
        *,
        known: Iterable[str] | None = None,
        where: str = "[security.acl]",
    ) -> Acl:
        """Build an access list from a decoded ``[security.acl]`` table (None: all defaults).

        Raises:
            AclError: an unknown key, a value of the wrong type, a pattern that does not parse,
                a publish rule on a reserved topic; the message names the table and key.
        """
        data = data or {}
        if not isinstance(data, Mapping):
            raise AclError(f"{where} must be a table")
        unknown = sorted(set(data) - _ACL_KEYS)
        if unknown:
            raise AclError(f"{where}: unknown key(s) {unknown}; known: {sorted(_ACL_KEYS)}")
        operators = _strings(data.get("operators", []), f"{where}.operators")
        privileged = _strings(data.get("privileged", []), f"{where}.privileged")
        check_publish = data.get("check_publish", True)
        if not isinstance(check_publish, bool):
            raise AclError(f"{where}.check_publish must be true or false, got {check_publish!r}")
        default = _rule_table(data.get("default", {}), f"{where}.default")
        identity_tables = data.get("identity", {})
        if not isinstance(identity_tables, Mapping):
            raise AclError(f"{where}.identity must be a table of identity tables")
        tables = {
            str(name): _rule_table(table, f"{where}.identity.{name}")
            for name, table in identity_tables.items()
        }
        return cls(
            default,
            tables,
            operators=operators,
            privileged=privileged,
            check_publish=check_publish,
            known=known,
            where=where,
        )

    # --- what the broker must do on the event path ----------------------------------------

    @property
    def checks_publish(self) -> bool:
        """True if the broker must see each event (its own forwarding loop, not the C proxy).

        False only when the config says ``check_publish = false``: then any authenticated
        identity may publish on any topic, ``presence.`` included.
        """
        return self._check_publish

    @property
    def checks_subscribe(self) -> bool:
        """True if some identity may not subscribe to everything (the XPUB needs XPUB_MANUAL)."""
        return not self._subscribe_everything

    def unlisted(self, known: Iterable[str]) -> frozenset[str]:
        """Operators and identity tables that name no identity of ``known`` (likely typos)."""
        names = frozenset(known)
        return (self.operators | frozenset(self._tables)) - names

    # --- rules ----------------------------------------------------------------------------

    def _rules_for(self, name: str) -> Rules:
        rules = self._rules.get(name)
        if rules is None:
            rules = self._build(name)
            if self.known is None and len(self._rules) >= _CACHE_LIMIT:
                self._rules.clear()  # identities not bounded by a keyring: keep the cache bounded
            self._rules[name] = rules
        return rules

    def _build(self, name: str) -> Rules:
        table = self._tables.get(name, {})
        where = f"{self._where}.{'identity.' + name if name in self._tables else 'default'}"

        def entries(key: str) -> tuple[str, ...]:
            return tuple(e.replace("{name}", name) for e in table.get(key, self._default[key]))

        return Rules(
            name=name,
            operator=name in self.operators,
            register=_Globs(entries("register"), calls=False, where=f"{where}.register"),
            publish=_Prefixes(entries("publish"), where=f"{where}.publish", reserved_ok=False),
            subscribe=_Prefixes(entries("subscribe"), where=f"{where}.subscribe", reserved_ok=True),
            call=_Globs(entries("call"), calls=True, where=f"{where}.call"),
        )

    def rules(self, identity: str) -> Rules:
        """The compiled rules of ``identity`` (its table, or the defaults)."""
        return self._rules_for(identity)

    def _unknown(self, identity: str) -> Decision | None:
        if self.known is None or identity in self.known:
            return None
        return Decision(
            False,
            f"identity {identity!r} is not known (no key, or its key was revoked)",
            "unknown_identity",
        )

    # --- decisions ------------------------------------------------------------------------

    def may_register(self, identity: str, service: str) -> Decision:
        """May ``identity`` register (READY) the service ``service``?"""
        refused = self._unknown(identity)
        if refused is not None:
            return refused
        if service == BROKER_IDENTITY:
            return Decision(
                False, f"the service name {service!r} is reserved for the broker", "register"
            )
        if self._rules_for(identity).register.matches(service):
            return ALLOWED
        return Decision(
            False, f"identity {identity!r} may not register service {service!r}", "register"
        )

    def may_publish(self, identity: str, frame: bytes) -> bool:
        """Fast check of a raw event frame (``topic \\0 body``) published by ``identity``."""
        if frame.startswith(_RESERVED_BYTES) or (
            self.known is not None and identity not in self.known
        ):
            return False
        publish = self._rules_for(identity).publish
        return frame.startswith(publish.allow) and not (
            publish.deny and frame.startswith(publish.deny)
        )

    def publish_decision(self, identity: str, topic: str) -> Decision:
        """``may_publish`` with a reason, for logs and the ``forbidden`` answer."""
        refused = self._unknown(identity)
        if refused is not None:
            return refused
        if topic.startswith(RESERVED_TOPICS):
            return Decision(
                False, f"only the broker publishes on {topic.split('.', 1)[0]}.*", "reserved"
            )
        if self.may_publish(identity, topic.encode()):
            return ALLOWED
        return Decision(False, f"identity {identity!r} may not publish on {topic!r}", "publish")

    def may_subscribe(self, identity: str, prefix: bytes) -> Decision:
        """May ``identity`` subscribe to topic prefix ``prefix`` (an XPUB_MANUAL subscription)?"""
        refused = self._unknown(identity)
        if refused is not None:
            return refused
        if prefix.startswith(_PROBE) and len(prefix) > len(_PROBE):
            return ALLOWED  # a client's own readiness probe (``wait_ready``) carries no data
        subscribe = self._rules_for(identity).subscribe
        if prefix.startswith(subscribe.allow) and not any(
            prefix.startswith(d) or d.startswith(prefix) for d in subscribe.deny
        ):
            return ALLOWED
        shown = prefix.decode("utf-8", "replace")
        return Decision(False, f"identity {identity!r} may not subscribe to {shown!r}", "subscribe")

    def is_privileged(self, service: str, command: str) -> bool:
        """True if the config (or linebus itself) makes ``service.command`` privileged."""
        return self._privileged.matches(f"{service}.{command}")

    def may_call(
        self, identity: str, service: str, command: str, *, privileged: bool = False
    ) -> Decision:
        """May ``identity`` call ``service.command``? ``privileged``: the actor declares it so.

        Cached per (identity, service, command, privileged): one dict lookup once warm.
        """
        key = (identity, service, command, privileged)
        decision = self._calls.get(key)
        if decision is None:
            decision = self._decide_call(identity, service, command, privileged)
            if len(self._calls) >= _CACHE_LIMIT:
                self._calls.clear()
            self._calls[key] = decision
        return decision

    def _decide_call(self, identity: str, service: str, command: str, privileged: bool) -> Decision:
        refused = self._unknown(identity)
        if refused is not None:
            return refused
        rules = self._rules_for(identity)
        target = f"{service}.{command}"
        if not rules.call.matches(target):
            return Decision(
                False,
                f"identity {identity!r} may not call {target}: no call rule allows it",
                "call",
            )
        if (privileged or self.is_privileged(service, command)) and not rules.operator:
            return Decision(
                False,
                f"identity {identity!r} may not call {target}: it is a privileged command "
                "and the identity is not an operator",
                "privileged",
            )
        return ALLOWED

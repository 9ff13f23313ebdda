"""Access lists: defaults, rules, privileged commands, reasons, parse errors, caching."""

from __future__ import annotations

from typing import Any

import pytest

from bus.errors import ConfigError
from bus.security.acl import Acl, Decision
from bus.security.errors import AclError


def event(topic: str) -> bytes:
    """A raw event frame as the XSUB receives it."""
    return topic.encode() + b"\0\x97\x01\x09"


@pytest.fixture
def default() -> Acl:
    return Acl.parse(None)


@pytest.fixture
def line() -> Acl:
    return Acl.parse(
        {
            "operators": ["alice"],
            "privileged": ["fr*.FR_Run*"],
            "identity": {
                "bench": {"register": ["fr?"], "publish": ["fr1.", "fr2."]},
                "viewer": {"subscribe": ["line1.", "presence.", "!line1.secret"], "call": []},
                "mes": {"call": ["*.*", "!flux*.*"]},
            },
        },
        known=["alice", "bob", "bench", "viewer", "mes", "fr1"],
    )


class TestDefaults:
    def test_everyone_registers_and_publishes_under_their_own_name(self, default: Acl) -> None:
        assert default.may_register("fr1", "fr1")
        assert not default.may_register("fr1", "fr2")
        assert default.may_publish("fr1", event("fr1.status"))
        assert not default.may_publish("fr1", event("fr2.status"))
        assert not default.may_publish("fr1", event("fr10.status"))

    def test_everyone_reads(self, default: Acl) -> None:
        assert default.may_subscribe("anyone", b"")
        assert default.may_subscribe("anyone", b"presence.")
        assert default.may_call("anyone", "fr1", "FR_GetStatus")
        assert default.may_call("anyone", "broker", "services")

    def test_only_operators_call_privileged(self, default: Acl) -> None:
        refused = default.may_call("bob", "fr1", "FR_LoadFile", privileged=True)
        assert not refused
        assert refused.rule == "privileged"
        assert refused.reason == (
            "identity 'bob' may not call fr1.FR_LoadFile: it is a privileged command "
            "and the identity is not an operator"
        )
        assert not default.may_call("bob", "broker", "reload")  # privileged by linebus itself

    def test_no_rule_on_the_event_path_but_publishing(self, default: Acl) -> None:
        assert default.checks_publish
        assert not default.checks_subscribe

    def test_nobody_registers_the_broker(self) -> None:
        acl = Acl.parse({"default": {"register": ["*"]}})
        assert acl.may_register("x", "anything")
        refused = acl.may_register("x", "broker")
        assert not refused and "reserved for the broker" in refused.reason


class TestReservedTopics:
    @pytest.mark.parametrize("topic", ["presence.fr1", "_probe.abc"])
    def test_never_published_by_an_identity(self, topic: str) -> None:
        acl = Acl.parse({"default": {"publish": [""]}})
        assert acl.may_publish("fr1", event("fr1.x"))
        assert not acl.may_publish("fr1", event(topic))
        decision = acl.publish_decision("fr1", topic)
        assert decision.rule == "reserved" and "only the broker" in decision.reason

    def test_a_rule_naming_them_is_a_parse_error(self) -> None:
        with pytest.raises(
            AclError, match=r"identity.fr1.publish: 'presence.fr1': only the broker"
        ):
            Acl.parse({"identity": {"fr1": {"publish": ["presence.fr1"]}}})


class TestRules:
    def test_register_globs(self, line: Acl) -> None:
        assert line.may_register("bench", "fr1")
        assert line.may_register("bench", "fr9")
        assert not line.may_register("bench", "fr10")
        assert not line.may_register("bench", "bench")  # the table replaced the default
        refused = line.may_register("bob", "fr1")
        assert refused == Decision(
            False, "identity 'bob' may not register service 'fr1'", "register"
        )

    def test_publish_prefixes(self, line: Acl) -> None:
        assert line.may_publish("bench", event("fr2.log"))
        assert not line.may_publish("bench", event("fr3.log"))
        decision = line.publish_decision("bench", "fr3.log")
        assert decision.reason == "identity 'bench' may not publish on 'fr3.log'"

    def test_subscribe_prefixes_and_overlap_with_a_denied_prefix(self, line: Acl) -> None:
        assert line.may_subscribe("viewer", b"line1.temp")
        # ZeroMQ filters by prefix: a subscriber to "line1." would receive line1.secret too.
        assert not line.may_subscribe("viewer", b"line1.")
        assert line.may_subscribe("viewer", b"presence.fr1")
        assert not line.may_subscribe("viewer", b"line2.")
        assert not line.may_subscribe("viewer", b"line1.secret.x")
        refused = line.may_subscribe("viewer", b"")  # would receive line1.secret
        assert refused.rule == "subscribe"
        assert refused.reason == "identity 'viewer' may not subscribe to ''"
        assert line.checks_subscribe

    def test_a_readiness_probe_is_always_subscribable(self, line: Acl) -> None:
        assert line.may_subscribe("viewer", b"_probe.k3x9")
        assert not line.may_subscribe("viewer", b"_probe.")  # everyone's probes: not a probe

    def test_call_patterns_with_deny(self, line: Acl) -> None:
        assert line.may_call("mes", "fr1", "FR_GetStatus")
        refused = line.may_call("mes", "flux.p1", "list_files")
        assert refused.rule == "call"
        assert (
            refused.reason
            == "identity 'mes' may not call flux.p1.list_files: no call rule allows it"
        )
        assert not line.may_call("viewer", "fr1", "FR_GetStatus")  # call = []

    def test_configured_privileged_commands(self, line: Acl) -> None:
        assert line.is_privileged("fr1", "FR_RunScript")
        assert not line.is_privileged("fr1", "FR_GetStatus")
        assert not line.may_call("bob", "fr1", "FR_RunScript")
        assert line.may_call("alice", "fr1", "FR_RunScript")
        assert line.may_call("alice", "broker", "reload")

    def test_operators_still_obey_call_rules(self) -> None:
        acl = Acl.parse({"operators": ["op"], "identity": {"op": {"call": ["fr1.*"]}}})
        assert acl.may_call("op", "fr1", "FR_LoadFile", privileged=True)
        assert not acl.may_call("op", "fr2", "FR_LoadFile", privileged=True)

    def test_name_placeholder(self) -> None:
        acl = Acl.parse({"default": {"call": ["{name}.*", "broker.*"], "subscribe": ["{name}."]}})
        assert acl.may_call("fr1", "fr1", "anything")
        assert not acl.may_call("fr1", "fr2", "anything")
        assert acl.may_subscribe("fr1", b"fr1.status")
        assert not acl.may_subscribe("fr1", b"fr2.")

    @pytest.mark.parametrize(
        ("pattern", "service", "command", "allowed"),
        [
            ("*.*", "line1.fr1", "FR_Load", True),
            ("fr1.*", "fr1.x", "cmd", False),  # '*' in a command never crosses a dot
            ("line1.*.status", "line1.fr1", "status", True),
            ("fr?.get_*", "fr1", "get_status", True),
            ("fr?.get_*", "fr12", "get_status", False),
            ("*.status", "a.b.c", "status", True),
        ],
    )
    def test_wildcards(self, pattern: str, service: str, command: str, allowed: bool) -> None:
        acl = Acl.parse({"default": {"call": [pattern]}})
        assert bool(acl.may_call("x", service, command)) is allowed


class TestKnownIdentities:
    def test_identity_without_a_key_is_refused_everything(self, line: Acl) -> None:
        for decision in (
            line.may_call("eve", "fr1", "FR_GetStatus"),
            line.may_register("eve", "eve"),
            line.may_subscribe("eve", b""),
            line.publish_decision("eve", "eve.x"),
        ):
            assert decision == Decision(
                False,
                "identity 'eve' is not known (no key, or its key was revoked)",
                "unknown_identity",
            )
        assert not line.may_publish("eve", event("eve.x"))

    def test_unlisted_names_in_the_acl(self, line: Acl) -> None:
        assert line.unlisted(["alice", "bench", "viewer"]) == {"mes"}


class TestCache:
    def test_decisions_are_cached_per_call(self, line: Acl) -> None:
        first = line.may_call("bob", "fr1", "FR_GetStatus")
        assert line.may_call("bob", "fr1", "FR_GetStatus") is first
        assert line.may_call("bob", "fr1", "FR_GetStatus", privileged=True) is not first

    def test_cache_stays_bounded(self, default: Acl, monkeypatch: pytest.MonkeyPatch) -> None:
        import bus.security.acl as acl_module

        monkeypatch.setattr(acl_module, "_CACHE_LIMIT", 10)
        for i in range(25):
            default.may_call("x", "svc", f"cmd{i}")
        assert len(default._calls) <= 10


class TestParseErrors:
    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"operator": []}, r"\[security.acl\]: unknown key\(s\) \['operator'\]"),
            ({"operators": "alice"}, r"\[security.acl\].operators must be a list of strings"),
            ({"check_publish": "no"}, r"check_publish must be true or false"),
            ({"default": []}, r"\[security.acl\].default must be a table"),
            ({"default": {"publsh": []}}, r"default: unknown key\(s\) \['publsh'\]"),
            (
                {"identity": {"x": {"call": ["fr1"]}}},
                r"identity.x.call: 'fr1' must be 'service.command'",
            ),
            ({"identity": {"x": {"call": [".cmd"]}}}, r"must be 'service.command'"),
            (
                {"identity": {"x": {"register": ["a b"]}}},
                r"identity.x.register: 'a b' is not a pattern",
            ),
            ({"identity": {"x": {"subscribe": ["a\0"]}}}, r"cannot contain NUL"),
            ({"identity": []}, r"identity must be a table of identity tables"),
            ({"privileged": ["nodot"]}, r"privileged: 'nodot' must be 'service.command'"),
        ],
    )
    def test_clear_messages(self, data: dict[str, Any], message: str) -> None:
        with pytest.raises(AclError, match=message) as err:
            Acl.parse(data)
        assert isinstance(err.value, ConfigError)

    def test_not_a_table(self) -> None:
        with pytest.raises(AclError, match="must be a table"):
            Acl.parse(["x"])  # type: ignore[arg-type]

    def test_check_publish_false(self) -> None:
        assert not Acl.parse({"check_publish": False}).checks_publish

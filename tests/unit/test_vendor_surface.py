"""The facades offer the vendors' public surface (issue 11, item 7): every public name of each
vendor module that ``linebus compat`` maps, every public method and property of its classes,
and the vendor's parameter names, in the vendor's order.

The vendor's surface comes from the vendor's package where it installs from PyPI (``rerobots``
0.11.0 and ``spotflow-device`` 2.1.1, both in the test extra: read with ``inspect``), and from a
recorded list where it does not (tests/vendor_surface/: fluxclient 1.3.5 read from its source
with ``ast``, see record_fluxclient.py; fr_comm from its seed page). The facade's side is what a
script sees under ``linebus compat``: the vendor module names imported through
``clients.compat.vendor_imports()``.

Rules: a vendor parameter must be accepted by the same name at the same position (so positional
and keyword calls both work); the facade's extra parameters must have defaults. What the
facades do not offer is listed in ``NOT_OFFERED`` with why; an entry that stops being true
fails the test, so the list stays the exact list of gaps.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from clients.compat import vendor_imports

RECORDED = Path(__file__).resolve().parent.parent / "vendor_surface"

#: Vendor names the facades do not offer (or offer with another signature), and why. Keys are
#: "module:Name" or "module:Name.member"; a parameter mismatch is keyed by the member.
NOT_OFFERED: dict[str, str] = {
    # rerobots 0.11.0 (README, "Remote lab": not built yet)
    "rerobots.api:APIClient.create_access_rule": "access rules: no actor command yet",
    "rerobots.api:APIClient.get_access_rules": "access rules: no actor command yet",
    "rerobots.api:APIClient.del_access_rule": "access rules: no actor command yet",
    "rerobots.api:APIClient.create_ci_project": "rerobots CI: no actor command yet",
    "rerobots.api:APIClient.get_ci_projects": "rerobots CI: no actor command yet",
    "rerobots.api:APIClient.submit_ci_job": "rerobots CI: no actor command yet",
    "rerobots.api:APIClient.revoke_token": "token revocation: no actor command yet",
    "rerobots.api:APIClient.purge": "purge: no actor command yet",
    "rerobots.api:APIClient.apply_auth_token": "the actor holds the API token; none is sent",
    "rerobots.api:APIClient.has_api_token": "the actor holds the API token; none is sent",
    "rerobots.api:APIClient.add_client_headers": "HTTP headers are the actor's settings",
    "rerobots.api:APIClient.clear_client_headers": "HTTP headers are the actor's settings",
    "rerobots.api:APIClient.get_client_headers": "HTTP headers are the actor's settings",
    "rerobots:Instance.create_access_rule": "access rules: no actor command yet",
    "rerobots:Instance.get_access_rules": "access rules: no actor command yet",
    "rerobots:Instance.del_access_rule": "access rules: no actor command yet",
    # fluxclient 1.3.5: its transports and key handling, which the actors own
    "fluxclient.robot:FluxRobot.__init__": "backend= (fluxclient's robot transport object) is"
    " not taken: the flux actor holds the connection",
    "fluxclient.device:Device.__init__": "Device(uuid, serial, master_key, disc_ver): the"
    " discovery actor holds master keys; a Device is made from discovery's metadata",
    "fluxclient.device:Device.from_dict": "fluxclient's cache of devices; not built yet",
    "fluxclient.device:Device.update_status": "fluxclient's cache of devices; not built yet",
    "fluxclient.device:Device.master_key": "the discovery actor holds the master keys",
    "fluxclient.device:Device.discover_protocol_version": "not in discovery's metadata yet",
    "fluxclient.device:DeviceDiscover.create_sockets": "UDP sockets: the discovery actor's",
    "fluxclient.device:DeviceDiscover.try_recive": "UDP sockets: the discovery actor's",
    "fluxclient.device:DeviceDiscover.on_recive": "UDP sockets: the discovery actor's",
    "fluxclient.device:DeviceDiscover.source_filter": "UDP sockets: the discovery actor's",
    "fluxclient.device:DeviceDiscover.add_master_key": "the discovery actor holds master keys",
    "fluxclient.device:DeviceDiscover.get_master_key": "the discovery actor holds master keys",
    "fluxclient.device:DeviceManager.__init__": "DeviceManager(backend): the backend is"
    " fluxclient's transport object; build one with from_uuid, from_ipaddr or from_device",
    "fluxclient.device:DeviceManager.from_usb": "USB and UART: the actors reach devices over"
    " the network only",
    "fluxclient.device:DeviceManager.from_uart": "USB and UART: as from_usb",
    "fluxclient.device:DeviceManager.connected": "the actor's connection: not built yet",
    "fluxclient.device:DeviceManager.endpoint": "the actor's connection: not built yet",
    "fluxclient.device:DeviceManager.get_ipaddr": "no discovery-actor command yet",
    "fluxclient.device:DeviceManager.get_wifi_ssid": "no discovery-actor command yet",
    "fluxclient.device:DeviceManager.reset_password": "no discovery-actor command yet",
}

#: Members every class has (object's and BaseException's): not part of a vendor's surface.
_INHERITED = set(dir(BaseException)) | set(dir(object))


# --- the vendor's side ------------------------------------------------------------------------


def _live_params(fn: Any, drop_first: bool) -> list[str]:
    names = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return names[1:] if drop_first else names


def _live_member(cls: type, name: str) -> dict[str, Any]:
    raw = inspect.getattr_static(cls, name)
    if isinstance(raw, property) or inspect.isgetsetdescriptor(raw):
        return {"kind": "property"}
    if isinstance(raw, classmethod):
        return {"kind": "classmethod", "params": _live_params(getattr(cls, name), False)}
    if isinstance(raw, staticmethod) or (inspect.isbuiltin(raw) and raw.__self__ is None):
        return {"kind": "staticmethod", "params": _live_params(getattr(cls, name), False)}
    if callable(raw):
        # Python functions take self first; a native method's text signature says self too.
        return {"kind": "method", "params": _live_params(raw, True)}
    return {"kind": "attribute"}


def _live_surface(module: ModuleType) -> dict[str, Any]:
    """``{name: {"kind", "members" | "params"}}`` of the public names of an installed vendor
    module: its ``__all__``, else the classes and functions its package defines."""
    root = module.__name__.partition(".")[0]
    names = getattr(module, "__all__", None) or [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and str(getattr(value, "__module__", "")).partition(".")[0] == root
    ]
    surface: dict[str, Any] = {}
    for name in names:
        value = getattr(module, name)
        if not inspect.isclass(value):
            surface[name] = {"kind": "function", "params": _live_params(value, False)}
            continue
        members = {
            member: _live_member(value, member)
            for member in dir(value)
            if not member.startswith("_") and member not in _INHERITED
        }
        if "__init__" in vars(value) and not issubclass(value, BaseException):
            members["__init__"] = {"kind": "method", "params": _live_params(value.__init__, True)}
        surface[name] = {"kind": "class", "members": members}
    return surface


def vendor_surfaces() -> dict[str, dict[str, Any]]:
    """Every vendor module ``linebus compat`` maps whose surface is known, by module name."""
    surfaces: dict[str, dict[str, Any]] = {}
    for name in ("rerobots", "rerobots.api", "spotflow_device"):
        surfaces[name] = _live_surface(importlib.import_module(name))
    for recorded in ("fluxclient.json", "fr_comm.json"):
        surfaces.update(json.loads((RECORDED / recorded).read_text())["modules"])
    return surfaces


# --- the comparison ---------------------------------------------------------------------------


def _facade_params(owner: type | None, name: str, fn: Any) -> list[inspect.Parameter]:
    raw = inspect.getattr_static(owner, name) if owner is not None else fn
    params = list(inspect.signature(fn).parameters.values())
    # A plain function found on a class still takes self (getattr gave it unbound).
    if owner is not None and inspect.isfunction(raw):
        params = params[1:]
    return params


def _param_problems(vendor: dict[str, Any], params: list[inspect.Parameter]) -> list[str]:
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_more = any(p.kind == p.VAR_POSITIONAL for p in params)
    problems = []
    if "positional" in vendor:  # recorded from calls: how many positional arguments it takes
        count = vendor["positional"]
        if len(positional) < count and not takes_more:
            problems.append(f"takes {len(positional)} positional arguments, the vendor's {count}")
        required = [p for p in positional if p.default is p.empty]
        if len(required) > count:
            problems.append(f"requires {len(required)} arguments, the vendor's calls pass {count}")
        return problems
    names = vendor["params"]
    for index, name in enumerate(names):
        if index < len(positional):
            if positional[index].name != name:
                problems.append(
                    f"parameter {index + 1} is {positional[index].name!r}, the vendor's {name!r}"
                )
        elif not takes_more:
            problems.append(f"no parameter {name!r} at position {index + 1}")
    extra = [p.name for p in positional[len(names) :] if p.default is p.empty]
    extra += [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if extra:
        problems.append(f"parameters the vendor does not have and no default: {extra}")
    return problems


def _instance_attributes(cls: type) -> set[str]:
    """Attributes the instances of a facade class carry: dataclass fields, annotations, and
    every ``self.NAME = ...`` in the methods of the class and its bases (from the source)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            continue
        names.update(getattr(klass, "__dataclass_fields__", {}))
        names.update(inspect.get_annotations(klass))
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    names.add(target.attr)
    return names


def _member_problems(cls: type, name: str, vendor: dict[str, Any]) -> list[str]:
    if name == "__init__":
        if issubclass(cls, BaseException):
            return []  # the vendors' exceptions take anything; code raises and catches them
        return _param_problems(vendor, _facade_params(cls, name, cls.__init__))
    if not hasattr(cls, name):
        if vendor["kind"] in ("property", "attribute") and name in _instance_attributes(cls):
            return []  # a plain attribute of each instance reads the same
        return ["missing"]
    raw = inspect.getattr_static(cls, name)
    is_property = isinstance(raw, property) or inspect.isgetsetdescriptor(raw)
    if vendor["kind"] == "property":
        return [] if is_property or not callable(raw) else ["a method, the vendor's a property"]
    if vendor["kind"] == "attribute":
        return []
    if is_property:
        return ["a property, the vendor's a method"]
    return _param_problems(vendor, _facade_params(cls, name, getattr(cls, name)))


def surface_problems(module: ModuleType, surface: dict[str, Any]) -> dict[str, list[str]]:
    """``{"module:Name[.member]": [problem, ...]}`` of the facade module under a vendor name."""
    problems: dict[str, list[str]] = {}
    for name, vendor in surface.items():
        key = f"{module.__name__}:{name}"
        if not hasattr(module, name):
            problems[key] = ["missing"]
            continue
        value = getattr(module, name)
        if vendor["kind"] == "function":
            found = _param_problems(vendor, _facade_params(None, name, value))
            if found:
                problems[key] = found
            continue
        if not inspect.isclass(value):
            problems[key] = [f"not a class ({type(value).__name__})"]
            continue
        for member, spec in vendor["members"].items():
            found = _member_problems(value, member, spec)
            if found:
                problems[f"{key}.{member}"] = found
    return problems


@pytest.fixture(scope="module")
def problems() -> dict[str, list[str]]:
    surfaces = vendor_surfaces()  # the real packages, imported before the block
    found: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    with vendor_imports():
        for module_name, surface in surfaces.items():
            module = importlib.import_module(module_name)
            # A class several vendor modules export (fluxclient.upnp.Device is
            # fluxclient.device.Device) is compared once, under the first module.
            first = {}
            for name, spec in surface.items():
                facade = getattr(module, name, None)
                key = (f"{id(facade)}" if facade is not None else name, json.dumps(spec))
                if key not in seen:
                    seen.add(key)
                    first[name] = spec
            found.update(surface_problems(module, first))
    return found


def test_every_vendor_module_is_compared() -> None:
    """Each vendor root of ``linebus compat`` has a known surface here."""
    from clients.compat import VENDOR_MODULES

    roots = {name.partition(".")[0] for name in vendor_surfaces()}
    assert roots == {name.partition(".")[0] for name in VENDOR_MODULES}


def test_the_facades_offer_the_vendors_surface(problems: dict[str, list[str]]) -> None:
    unexpected = {key: found for key, found in problems.items() if key not in NOT_OFFERED}
    assert not unexpected, "\n".join(f"{key}: {'; '.join(v)}" for key, v in unexpected.items())


def test_the_list_of_gaps_is_exact(problems: dict[str, list[str]]) -> None:
    """An entry of NOT_OFFERED that is offered now must leave the list."""
    stale = sorted(set(NOT_OFFERED) - set(problems))
    assert not stale, f"offered now, remove from NOT_OFFERED: {stale}"


def test_the_comparison_sees_a_gap() -> None:
    """The comparison itself: a missing method, a renamed or moved parameter, an extra required
    one and a property offered as a method are each reported."""

    class Facade:
        def __init__(self, endpoint: str, key: str, *, bus: str | None = None) -> None: ...

        def renamed(self, temperature: float, index: int = 0) -> None: ...

        def extra(self, path: str, mode: str) -> None: ...

        def prop(self) -> str:
            return ""

    module = ModuleType("vendor")
    module.Facade = Facade
    surface = {
        "Facade": {
            "kind": "class",
            "members": {
                "__init__": {"kind": "method", "params": ["endpoint", "key", "device"]},
                "renamed": {"kind": "method", "params": ["temp", "index"]},
                "extra": {"kind": "method", "params": ["path"]},
                "prop": {"kind": "property"},
                "gone": {"kind": "method", "params": []},
            },
        },
        "helper": {"kind": "function", "params": []},
    }
    assert surface_problems(module, surface) == {
        "vendor:Facade.__init__": ["no parameter 'device' at position 3"],
        "vendor:Facade.renamed": ["parameter 1 is 'temperature', the vendor's 'temp'"],
        "vendor:Facade.extra": ["parameters the vendor does not have and no default: ['mode']"],
        "vendor:Facade.prop": ["a method, the vendor's a property"],
        "vendor:Facade.gone": ["missing"],
        "vendor:helper": ["missing"],
    }

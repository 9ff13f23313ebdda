"""Record fluxclient's public surface from its source, without importing it.

fluxclient is not on PyPI and does not build on Python 3.11 (C extensions, old pins), so its
surface is read from a source checkout with ``ast``: for each exported name of the modules the
linebus facades stand in for, the class or function it names (import aliases followed), and for
a class its public methods, properties, class and static methods (bases within fluxclient
included) with their parameter names.

    git clone https://github.com/flux3dp/fluxclient && git -C fluxclient checkout dbf334a
    python tests/vendor_surface/record_fluxclient.py fluxclient > tests/vendor_surface/fluxclient.json

The recorded file says which commit and version it came from; test_vendor_surface.py compares
the facades with it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The modules ``linebus compat`` offers, and which of their names are public: the module's
#: ``__all__``, or (``fluxclient.commands.misc``, a module of command-line helpers) the names
#: the seed uses.
#: ``fluxclient.upnp.UpnpTask`` is left out: in 1.3.5 it is an alias of ``DeviceManager`` (compared
#: under ``fluxclient.device``), while linebus's ``UpnpTask`` is the seed's older class with its
#: own constructor ``UpnpTask(uuid, ..., lookup_callback, lookup_timeout)``, which the seed tests run.
MODULES: dict[str, list[str] | None] = {
    "fluxclient.robot": None,
    "fluxclient.robot.errors": ["RobotError", "RobotSessionError"],
    "fluxclient.upnp": ["UpnpDiscover", "discover_device", "Device", "UpnpError", "UpnpException"],
    "fluxclient.device": None,
    "fluxclient.device.manager": None,
    "fluxclient.commands.misc": ["get_or_create_default_key"],
}


class Source:
    def __init__(self, root: Path) -> None:
        self.root = root

    def tree(self, module: str) -> ast.Module:
        base = self.root / Path(*module.split("."))
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        return ast.parse(path.read_text(), str(path))

    def all_names(self, module: str) -> list[str]:
        for node in self.tree(module).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                assert isinstance(node.value, ast.List | ast.Tuple)
                return [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
        raise LookupError(f"{module} has no __all__")

    def is_package(self, module: str) -> bool:
        return (self.root / Path(*module.split("."))).is_dir()

    def resolve(self, module: str, name: str) -> tuple[str, ast.AST]:
        """The module and definition that ``module.name`` is, through ``from x import y as z``."""
        for node in self.tree(module).body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name:
                return module, node
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        return self.resolve(self.absolute(module, node), alias.name)
        raise LookupError(f"{module}.{name} not found")

    def absolute(self, module: str, node: ast.ImportFrom) -> str:
        """The module an ``import from`` in ``module`` names (relative imports resolved)."""
        if not node.level:
            return node.module or ""
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if self.is_package(module) else 0)
        return ".".join([*parts[:keep], *([node.module] if node.module else [])])


def _params(fn: ast.FunctionDef, drop_first: bool) -> list[str]:
    args = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args]]
    if drop_first:
        args = args[1:]
    args += [a.arg for a in fn.args.kwonlyargs]
    return args


def _kind(fn: ast.FunctionDef) -> str:
    names = {d.id for d in fn.decorator_list if isinstance(d, ast.Name)}
    for kind in ("property", "classmethod", "staticmethod"):
        if kind in names:
            return kind
    return "method"


def describe(source: Source, module: str, node: ast.AST) -> dict[str, Any]:
    if isinstance(node, ast.FunctionDef):
        return {"kind": "function", "params": _params(node, False)}
    assert isinstance(node, ast.ClassDef)
    members: dict[str, Any] = {}
    for base in node.bases:  # fluxclient's own bases first, so the class's own win
        if isinstance(base, ast.Name) and base.id not in ("object", "Exception", "RuntimeError"):
            base_module, base_node = source.resolve(module, base.id)
            members.update(describe(source, base_module, base_node)["members"])
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and (
            not item.name.startswith("_") or item.name == "__init__"
        ):
            kind = _kind(item)
            entry: dict[str, Any] = {"kind": kind}
            if kind != "property":
                entry["params"] = _params(item, kind != "staticmethod")
            members[item.name] = entry
    return {"kind": "class", "members": members}


def record(root: Path) -> dict[str, Any]:
    """The surface of the fluxclient checkout at ``root`` (the directory holding ``fluxclient/``)."""
    source = Source(root)
    modules: dict[str, Any] = {}
    for module, names in MODULES.items():
        wanted = names if names is not None else source.all_names(module)
        modules[module] = {
            name: describe(source, *source.resolve(module, name))
            for name in wanted
            if isinstance(name, str)  # fluxclient.upnp.device's __all__ holds a dict by mistake
        }
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    version = next(
        node.value.value
        for node in source.tree("fluxclient").body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == "__version__"
        and isinstance(node.value, ast.Constant)
    )
    return {
        "source": f"fluxclient {version}, github.com/flux3dp/fluxclient commit {commit}",
        "recorded_by": "tests/vendor_surface/record_fluxclient.py (ast, no import)",
        "modules": modules,
    }


if __name__ == "__main__":
    json.dump(record(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=True)
    print()

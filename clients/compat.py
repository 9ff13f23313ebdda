"""Vendor scripts over the bus, not even the import changed: an import hook for ``linebus compat``.

``linebus compat SCRIPT [ARGS...]`` runs ``SCRIPT`` as ``python SCRIPT ARGS...`` would, with one
difference: while it runs, ``import fr_comm``, ``import spotflow_device``, ``import rerobots``,
``from fluxclient.robot import FluxRobot`` ... give the linebus facades in ``clients/`` instead
of the vendors' libraries (``VENDOR_MODULES`` lists every name). The script's vendor
constructors then find their device's actor on the bus (``LINEBUS_ENDPOINT``, which the CLI's
``--endpoint`` sets).

Nothing is installed under the vendors' names: outside ``linebus compat`` (or the
``vendor_imports()`` block), ``import rerobots`` is the real package, and the two can live in
one environment. Each vendor name gets a module object of its own (``fr_comm.__name__`` is
``"fr_comm"``) whose names are the facade's very objects (``fr_comm.FlashRunner is
clients.flashrunner.FlashRunner``), so ``except`` clauses and ``isinstance`` work either way.

A vendor module without a facade (``fluxclient.laser``, ``rerobots.cli`` ...) raises
``ModuleNotFoundError`` naming the modules that are offered, rather than reaching for the real
package: a script should not run half on the bus and half on the network.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import runpy
import sys
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType, TracebackType
from typing import Any

__all__ = ["VENDOR_MODULES", "VendorFinder", "run_script", "vendor_imports"]

#: Every vendor module ``linebus compat`` offers, and the facade module behind it. ``None``: a
#: parent package with no names of its own (``fluxclient``: only its submodules are offered).
#: fluxclient's older (``upnp``) and newer (``device``) discovery modules share one facade, as
#: do ``rerobots`` (``Instance``) and ``rerobots.api`` (``APIClient`` and the errors).
VENDOR_MODULES: Mapping[str, str | None] = {
    "fr_comm": "clients.flashrunner",
    "spotflow_device": "clients.telemetry",
    "rerobots": "clients.remotelab",
    "rerobots.api": "clients.remotelab",
    "fluxclient": None,
    "fluxclient.robot": "clients.flux",
    "fluxclient.robot.robot": "clients.flux",
    "fluxclient.robot.errors": "clients.flux",
    "fluxclient.upnp": "clients.discovery",
    "fluxclient.upnp.discover": "clients.discovery",
    "fluxclient.upnp.task": "clients.discovery",
    "fluxclient.device": "clients.discovery",
    "fluxclient.device.discover": "clients.discovery",
    "fluxclient.device.manager": "clients.discovery",
    "fluxclient.device.device": "clients.discovery",
    "fluxclient.commands": None,
    "fluxclient.commands.misc": "clients.flux",
}

#: The top-level vendor names: every module under them is ours while the hook is in place.
_ROOTS = frozenset(name.partition(".")[0] for name in VENDOR_MODULES)


def _is_vendor_name(name: str) -> bool:
    return name.partition(".")[0] in _ROOTS


class _AliasLoader(importlib.abc.Loader):
    """Fills a vendor-named module with the names of its facade module."""

    def __init__(self, facade: str | None) -> None:
        self.facade = facade

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a plain new module, named after the vendor's

    def exec_module(self, module: ModuleType) -> None:
        if self.facade is None:
            module.__doc__ = f"linebus compat: the parent package of {module.__name__}'s modules."
            return
        facade = importlib.import_module(self.facade)
        namespace = vars(module)
        namespace.update(
            {name: value for name, value in vars(facade).items() if not name.startswith("__")}
        )
        namespace["__doc__"] = facade.__doc__
        namespace["__file__"] = facade.__file__  # where the names come from, in errors
        if hasattr(facade, "__all__"):
            namespace["__all__"] = list(facade.__all__)

        def __getattr__(name: str) -> Any:
            # Names the facade defines later (or that submodule imports add to it) are looked
            # up live; anything else is an AttributeError naming the facade.
            try:
                return getattr(facade, name)
            except AttributeError:
                raise AttributeError(
                    f"module {module.__name__!r} (linebus compat: {self.facade}) has no"
                    f" attribute {name!r}"
                ) from None

        namespace["__getattr__"] = __getattr__  # PEP 562: a module's own attribute hook


class VendorFinder(importlib.abc.MetaPathFinder):
    """The ``sys.meta_path`` finder that answers the vendor module names (``VENDOR_MODULES``)."""

    def __init__(self, modules: Mapping[str, str | None] = VENDOR_MODULES) -> None:
        self.modules = dict(modules)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            if _is_vendor_name(fullname):
                offered = ", ".join(sorted(self.modules))
                raise ModuleNotFoundError(
                    f"linebus compat: no linebus facade stands in for {fullname!r}"
                    f" (offered: {offered})",
                    name=fullname,
                )
            return None
        facade = self.modules[fullname]
        is_package = any(other.startswith(fullname + ".") for other in self.modules)
        spec = importlib.machinery.ModuleSpec(
            fullname, _AliasLoader(facade), origin=f"linebus compat: {facade or 'package'}"
        )
        if is_package:
            spec.submodule_search_locations = []  # submodules come from this finder alone
        return spec


def _vendor_modules_loaded() -> dict[str, ModuleType]:
    return {name: mod for name, mod in sys.modules.items() if _is_vendor_name(name)}


@contextlib.contextmanager
def vendor_imports() -> Iterator[VendorFinder]:
    """While the block runs, the vendor module names import the facades.

    Vendor modules imported before (the real ``rerobots``, say) are set aside and put back after,
    and the vendor-named modules of the block are dropped, so the process imports the real
    packages again afterwards.
    """
    finder = VendorFinder()
    saved = _vendor_modules_loaded()
    for name in saved:
        del sys.modules[name]
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
        for name in _vendor_modules_loaded():
            del sys.modules[name]
        sys.modules.update(saved)


def run_script(script: str, args: Sequence[str]) -> int:
    """Run ``script`` as ``python script args...`` would, with the vendor imports in place.

    ``sys.argv`` is ``[script, *args]``, ``sys.path[0]`` the script's directory and
    ``__name__`` ``"__main__"``. ``SystemExit`` passes through unchanged (the interpreter turns it
    into the exit code as for any script); any other exception is printed as Python prints it,
    from the script's own frames on, and gives exit code 1 (130 for Ctrl-C).

    Raises:
        FileNotFoundError: ``script`` is not a file.
    """
    if not os.path.isfile(script):
        raise FileNotFoundError(f"linebus compat: no such script: {script}")
    path = os.path.abspath(script)
    sys.argv = [script, *args]
    if sys.path:
        sys.path[0] = os.path.dirname(path)
    else:
        sys.path.insert(0, os.path.dirname(path))
    with vendor_imports():
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit:
            raise
        except BaseException as exc:
            # As the interpreter reports an uncaught exception (a hook the script set included).
            # (The default hook prints the exception's own traceback: trim that one.)
            exc = exc.with_traceback(_from_script(exc.__traceback__, path))
            sys.excepthook(type(exc), exc, exc.__traceback__)
            return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def _from_script(tb: TracebackType | None, path: str) -> TracebackType | None:
    """The traceback from the script's first frame on (runpy's and linebus's frames left out)."""
    start = tb
    while start is not None and os.path.abspath(start.tb_frame.f_code.co_filename) != path:
        start = start.tb_next
    return start if start is not None else tb

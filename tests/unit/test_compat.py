"""The import hook of ``linebus compat`` (clients.compat), in-process: the vendor names give the
facades inside ``vendor_imports()`` and the real packages outside it; ``run_script`` runs a
script as ``python SCRIPT ARGS`` would; ``linebus compat`` passes the bus options on."""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from pathlib import Path

import pytest

import bus.logs
import clients.discovery
import clients.flashrunner
import clients.flux
import clients.remotelab
import clients.telemetry
from bus import cli
from clients.compat import VENDOR_MODULES, VendorFinder, run_script, vendor_imports

SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"]).resolve()


def _real_rerobots_loaded() -> None:
    api = importlib.import_module("rerobots.api")
    assert Path(api.__file__ or "").resolve().is_relative_to(SITE_PACKAGES)
    assert api.APIClient.__module__ == "rerobots.api"
    assert api.APIClient is not clients.remotelab.APIClient


def test_vendor_names_give_the_facades_objects() -> None:
    with vendor_imports():
        import fluxclient.robot
        import fr_comm
        import rerobots
        import rerobots.api
        import spotflow_device
        from fluxclient.upnp import UpnpTask

        assert fr_comm.__name__ == "fr_comm"
        assert fr_comm.FlashRunner is clients.flashrunner.FlashRunner
        assert fr_comm.FR_Comm_Exception is clients.flashrunner.FR_Comm_Exception
        assert spotflow_device.DeviceClient is clients.telemetry.DeviceClient
        assert rerobots.Instance is clients.remotelab.Instance
        assert rerobots.api.APIClient is clients.remotelab.APIClient
        assert rerobots.api is sys.modules["rerobots.api"]  # a submodule, as in the package
        assert fluxclient.robot.FluxRobot is clients.flux.FluxRobot
        assert UpnpTask is clients.discovery.UpnpTask
        # The module's own object, not the facade's: the facade keeps its name and spec.
        assert fr_comm is not clients.flashrunner
        assert clients.flashrunner.__name__ == "clients.flashrunner"


def test_star_import_takes_the_facades_all() -> None:
    with vendor_imports():
        namespace: dict[str, object] = {}
        exec("from fr_comm import *", namespace)
        names = {name for name in namespace if name != "__builtins__"}
        assert names == set(clients.flashrunner.__all__)


def test_every_listed_module_imports() -> None:
    with vendor_imports():
        for name, facade in VENDOR_MODULES.items():
            module = importlib.import_module(name)
            assert module.__name__ == name
            if facade is not None:
                assert module.__file__ == importlib.import_module(facade).__file__


def test_a_vendor_module_without_facade_is_a_clear_error() -> None:
    with vendor_imports(), pytest.raises(ModuleNotFoundError) as caught:
        importlib.import_module("fluxclient.laser")
    assert caught.value.name == "fluxclient.laser"
    assert "no linebus facade stands in for 'fluxclient.laser'" in str(caught.value)
    assert "fluxclient.robot" in str(caught.value)  # what is offered instead


def test_a_missing_name_names_the_facade() -> None:
    with vendor_imports():
        import fr_comm

        with pytest.raises(AttributeError, match=r"'fr_comm' \(linebus compat: clients.flash"):
            _ = fr_comm.FR_NoSuchThing


def test_other_imports_are_left_to_the_usual_finders() -> None:
    assert VendorFinder().find_spec("json", None) is None
    assert VendorFinder().find_spec("rerobotsx", None) is None


def test_the_real_rerobots_imports_outside_compat() -> None:
    """Nothing is installed under the vendor's name: the published client is there as usual,
    before a compat block, after one, and the same module objects are put back."""
    _real_rerobots_loaded()
    before = sys.modules["rerobots.api"]
    with vendor_imports():
        import rerobots.api

        assert rerobots.api.APIClient is clients.remotelab.APIClient
    assert not any(isinstance(finder, VendorFinder) for finder in sys.meta_path)
    assert sys.modules["rerobots.api"] is before
    _real_rerobots_loaded()


def test_run_script_behaves_as_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    script = tmp_path / "vendor_script.py"
    script.write_text(
        "import sys\n"
        "from fr_comm import FlashRunner\n"
        "print(__name__, sys.argv[1:], sys.path[0], FlashRunner.__module__)\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(int(sys.argv[1]))\n"
    )
    with pytest.raises(SystemExit) as caught:
        run_script(str(script), ["7", "--flag"])
    assert caught.value.code == 7
    out = capsys.readouterr().out
    assert out == f"__main__ ['7', '--flag'] {tmp_path} clients.flashrunner\n"
    quiet = tmp_path / "quiet.py"
    quiet.write_text("import rerobots\n")
    assert run_script(str(quiet), []) == 0  # ends without sys.exit: exit code 0


def test_run_script_prints_an_uncaught_exception_from_the_script_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    script = tmp_path / "fails.py"
    script.write_text("def go():\n    raise ValueError('boom')\n\ngo()\n")
    assert run_script(str(script), []) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert "runpy" not in err and "compat.py" not in err
    assert f'File "{script}", line 4, in <module>' in err
    assert err.rstrip().endswith("ValueError: boom")
    assert not any(isinstance(finder, VendorFinder) for finder in sys.meta_path)


def test_cli_sets_the_bus_for_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bus.logs, "configure_logging", lambda **_: None)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    for variable in ("LINEBUS_ENDPOINT", "LINEBUS_SUBSCRIBE"):
        monkeypatch.setenv(variable, "unused")  # so that monkeypatch puts the value back
    script = tmp_path / "show.py"
    script.write_text(
        "import os, sys\n"
        "print(os.environ['LINEBUS_ENDPOINT'], os.environ['LINEBUS_SUBSCRIBE'], sys.argv[1:])\n"
    )
    code = cli.main(
        [
            "compat",
            "--endpoint",
            "tcp://127.0.0.1:1",
            "--subscribe",
            "tcp://127.0.0.1:3",
            str(script),
            "--endpoint",
            "mine",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == "tcp://127.0.0.1:1 tcp://127.0.0.1:3 ['--endpoint', 'mine']\n"


def test_cli_refuses_a_missing_script_or_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bus.logs, "configure_logging", lambda **_: None)
    assert cli.main(["compat", str(tmp_path / "none.py")]) == cli.EXIT_USAGE
    assert "no such script" in capsys.readouterr().err
    script = tmp_path / "s.py"
    script.write_text("raise SystemExit('must not run')\n")
    missing = str(tmp_path / "missing.key_secret")
    code = cli.main(["compat", "--key", missing, "--broker-key", missing, str(script)])
    assert code == cli.EXIT_USAGE
    assert "missing.key_secret" in capsys.readouterr().err
    assert os.environ.get("LINEBUS_KEY_FILE") != missing

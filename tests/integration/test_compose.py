"""docker-compose.yml without a Docker engine (none runs on these machines).

``test_compose_files_name_what_exists``: ``docker-compose config`` (Debian's docker-compose 1.29)
accepts docker-compose.yml alone and with docker-compose.secure.yml, and everything the resolved
files name exists: each actor and simulator of the config is a service of its own; every command
and health check is a valid ``linebus`` command line whose config is mounted from configs/,
loads, and has the actor or simulator it names; every published port is on 127.0.0.1 and one
the service binds; every secret of the secured variant is a file ``linebus keys prepare`` makes.

``test_compose_commands_run_the_demo_line``: the services' very commands, with their
environment and working directory (mounts become a directory tree: bind mounts symlinks to their
source, named volumes directories), run as plain processes in a network namespace of their own
where every service name is 127.0.0.1, so the file's fixed ports clash with nothing on the
machine; dependencies start first (``service_healthy`` ones once their health check passes);
restart policies are honoured. The stack must come up healthy by its own health checks, and the
``tour`` service's command (the demo's tour) must pass against it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from bus import config as config_mod
from bus.cli import build_parser
from tests import netns
from tests.conftest import KEY_VARIABLES, ROOT, scaled, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("docker-compose") is None,
        reason="docker-compose is not installed (Debian's docker-compose package; .ci/run)",
    ),
]

PLAIN = ("docker-compose.yml",)
SECURE = ("docker-compose.yml", "docker-compose.secure.yml")
DOCKERFILE = (ROOT / "Dockerfile").read_text()
#: The image's working directory: relative paths in commands and configs start there.
(WORKDIR,) = map(PurePosixPath, re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE, re.M))
RESTARTING = ("always", "unless-stopped", "on-failure")


def compose_config(files: tuple[str, ...]) -> dict[str, Any]:
    """What ``docker-compose config`` makes of ``files``: validated, merged, paths resolved."""
    argv = ["docker-compose", *(f"--file={name}" for name in files), "config"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=scaled(60)
    )
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def mounts(service: dict[str, Any]) -> dict[PurePosixPath, str]:
    """Container path -> host path (bind mount) or volume name, from the resolved file."""
    found: dict[PurePosixPath, str] = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        found[PurePosixPath(target)] = source
    return found


def host_path(service: dict[str, Any], path: str) -> Path:
    """Where the file a service's command names (relative to the workdir) is on the host."""
    inside = WORKDIR / path
    for target, source in mounts(service).items():
        if inside.is_relative_to(target) and source.startswith("/"):
            return Path(source) / inside.relative_to(target)
    raise AssertionError(f"{path} is not on a bind mount of the service: {service.get('volumes')}")


def bound_ports(service: dict[str, Any], configs: dict[str, Any]) -> set[int]:
    """The ports a service's process binds: its command's and its simulator's arguments."""
    words = list(service["command"])
    if words[:2] == ["linebus", "simulator"]:
        config = configs[words[2]]
        words += next(s.args for s in config.simulators if s.name == words[3])
    return {int(port) for word in words for port in re.findall(r"0\.0\.0\.0:(\d+)", word)}


def check_linebus(argv: list[str], service: dict[str, Any], configs: dict[str, Any]) -> Any:
    """``argv`` is a valid ``linebus`` command line; its config loads and has what it names."""
    assert argv[0] == "linebus", argv
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:
        raise AssertionError(f"not a valid linebus command line: {argv}") from None
    path = getattr(args, "config", None)
    if path is None:
        return args
    if path not in configs:
        configs[path] = config_mod.load(host_path(service, path))
    config = configs[path]
    if args.subcommand == "actor":
        config.actor(args.name)  # raises ConfigError naming the missing actor
    elif args.subcommand == "simulator":
        (spec,) = [s for s in config.simulators if s.name == args.name]
        assert find_spec(spec.module) is not None, f"{spec.module} is not importable"
    elif args.subcommand == "keys":
        assert config.security.curve, f"{path} is not secured"
    return args


def check_service(name: str, service: dict[str, Any], configs: dict[str, Any]) -> None:
    command = list(service["command"])
    if command[0] == "sh":  # a one-shot setup script: each linebus step of it
        steps = [step.split() for step in command[2].split("&&")]
        for step in steps:
            if step[0] == "linebus":
                check_linebus(step, service, configs)
        return
    args = check_linebus(command, service, configs)
    if args.subcommand in ("actor", "simulator"):
        assert args.name == name, f"service {name} runs {args.name}: name them alike"
    ports = bound_ports(service, configs)
    for published in service.get("ports", []):
        assert published.startswith("127.0.0.1:"), f"{name}: {published} is not on loopback"
        assert int(published.split(":")[2].split("/")[0]) in ports, f"{name}: {published}"
    health = service.get("healthcheck")
    if health is None:
        assert service.get("profiles"), f"{name} has no health check"
        return
    test = list(health["test"])
    assert test[0] == "CMD", test
    if test[1] == "python":  # a simulator: its port accepts connections
        (port,) = re.findall(r"'127\.0\.0\.1', (\d+)", test[3])
        assert int(port) in ports, f"{name}: health check port {port} is not one it binds"
        return
    health_args = check_linebus(test[1:], service, configs)
    assert health_args.subcommand == "health"
    assert health_args.service == (None if args.subcommand == "broker" else name), test


@pytest.mark.parametrize("files", [PLAIN, SECURE], ids=["plain", "secured"])
def test_compose_files_name_what_exists(files: tuple[str, ...], tmp_path: Path) -> None:
    resolved = compose_config(files)
    services: dict[str, Any] = resolved["services"]
    configs: dict[str, Any] = {}
    for name, service in services.items():
        check_service(name, service, configs)
    line = configs["configs/compose-secure.toml" if files == SECURE else "configs/compose.toml"]
    processes = {"broker", *(a.name for a in line.actors), *(s.name for s in line.simulators)}
    extra = {"tour", "keys"} if files == SECURE else {"tour"}
    assert set(services) == processes | extra
    # A named volume starts with the ownership of its mount point in the image: the image must
    # make it (as its user's), or the non-root processes cannot write there.
    made = {WORKDIR / d for d in re.findall(r"mkdir -p ([^\\\n]+)", DOCKERFILE)[0].split()}
    for service in services.values():
        for target, volume in mounts(service).items():
            assert volume.startswith("/") or volume in resolved["volumes"], volume
            assert volume.startswith("/") or target in made, f"the image does not make {target}"
    if files == PLAIN:
        assert "telemetry-store" in mounts(services["telemetry"]).values()
        return
    # The secrets are the files `linebus keys prepare` makes (run here on a copy of configs/).
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "compose-secure.toml", tmp_path / "configs")
    prepare = [sys.executable, "-m", "bus.cli", "keys", "prepare", "configs/compose-secure.toml"]
    subprocess.run(prepare, cwd=tmp_path, check=True, capture_output=True, timeout=scaled(30))
    for secret in resolved["secrets"].values():
        relative = Path(secret["file"]).relative_to(ROOT)
        assert (tmp_path / relative).is_file(), f"{relative} is not made by linebus keys prepare"
    for name in (a.name for a in line.actors):
        secrets = [s if isinstance(s, str) else s["source"] for s in services[name]["secrets"]]
        assert sorted(secrets) == sorted(["broker_public", f"{name}_key"]), name


# --- the stack as plain processes ----------------------------------------------------------------


@dataclass
class Stack:
    """The services of a resolved compose file, run as plain processes in ``ns``."""

    services: dict[str, Any]
    ns: netns.Namespace
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    healthy: set[str] = field(default_factory=set)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self) -> None:
        """The working directory as each container sees it: mounts at their targets."""
        placed: dict[PurePosixPath, str] = {}
        for service in self.services.values():
            for target, source in mounts(service).items():
                assert placed.setdefault(target, source) == source, f"{target}: two sources"
        for target, source in placed.items():
            where = self.workdir / target.relative_to(WORKDIR)
            where.parent.mkdir(parents=True, exist_ok=True)
            if source.startswith("/"):
                where.symlink_to(source)
            else:
                where.mkdir()

    def environment(self, name: str) -> dict[str, str]:
        """Ours without linebus or key variables, then the service's, as a container has."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LINEBUS_") and k not in KEY_VARIABLES
        }
        env.update({k: str(v) for k, v in self.services[name].get("environment", {}).items()})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @staticmethod
    def program(command: list[str]) -> list[str]:
        """A container's command with this interpreter's programs."""
        programs = {
            "linebus": str(Path(sys.executable).parent / "linebus"),
            "python": sys.executable,
        }
        return [programs.get(command[0], command[0]), *command[1:]]

    def argv(self, command: list[str]) -> list[str]:
        """A container's command inside the namespace."""
        return self.ns.argv(*self.program(command))

    def start(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        try:
            self.procs[name] = subprocess.Popen(
                self.argv(list(self.services[name]["command"])),
                cwd=self.workdir,
                env=self.environment(name),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def check_health(self, name: str) -> bool:
        """Run the service's health check once (True once it passed)."""
        if name not in self.healthy:
            test = list(self.services[name]["healthcheck"]["test"])[1:]
            result = subprocess.run(
                self.argv(test),
                cwd=self.workdir,
                env=self.environment(name),
                capture_output=True,
                timeout=scaled(30),
            )
            if result.returncode == 0:
                self.healthy.add(name)
        return name in self.healthy

    def up(self, names: list[str]) -> None:
        """Start ``names`` in dependency order, as ``docker compose up`` does."""
        started: set[str] = set()

        def bring(name: str) -> None:
            if name in started:
                return
            for dependency, rule in self.services[name].get("depends_on", {}).items():
                bring(dependency)
                if rule.get("condition") == "service_healthy":
                    wait_until(
                        lambda d=dependency: self.check_health(d),
                        scaled(30),
                        f"{dependency} healthy before {name} starts",
                    )
            self.start(name)
            started.add(name)

        for name in names:
            bring(name)
        threading.Thread(target=self._restart_policy, name="restarts", daemon=True).start()

    def _restart_policy(self) -> None:
        while not self.stopping.wait(0.1):
            with self.lock:
                # down() may have stopped everything while this pass waited for the lock: the
                # exits it caused are no crashes to restart (13 services started again, never
                # stopped, failed a later test with "subprocess ... is still running").
                if self.stopping.is_set():
                    return
                for name, proc in list(self.procs.items()):
                    policy = self.services[name].get("restart", "no")
                    if proc.poll() is not None and policy in RESTARTING:
                        self.restarts[name] = self.restarts.get(name, 0) + 1
                        self.start(name)

    def down(self) -> None:
        """SIGTERM everything, SIGKILL what outlives 10 s."""
        self.stopping.set()
        with self.lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=scaled(10))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.stem}\n{log.read_text(errors='replace')[-1500:]}"
            for log in sorted(self.workdir.glob("*.log"))
        )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    services: dict[str, Any] = compose_config(PLAIN)["services"]
    network = netns.Network("lbc")
    try:
        ns = network.namespace("stack", dict.fromkeys(services, "127.0.0.1"))
        running = Stack(services, ns, tmp_path)
        running.prepare()
        try:
            yield running
        finally:
            running.down()
    finally:
        network.close()


def test_compose_commands_run_the_demo_line(stack: Stack) -> None:
    always = [name for name, s in stack.services.items() if not s.get("profiles")]
    tour_command = stack.services["tour"]["command"]
    try:
        stack.up(always)
        for name in always:
            wait_until(lambda n=name: stack.check_health(n), scaled(45), f"{name} healthy")
        # The tour in a pid namespace of its own, as in its container: it cannot see the
        # actors' processes, so it asks the echo actor to exit rather than signal it.
        pid_namespace = ["unshare", "--pid", "--fork", "--mount-proc"]
        result = subprocess.run(
            stack.ns.argv(*pid_namespace, *stack.program(list(tour_command))),
            cwd=stack.workdir,
            env=stack.environment("tour"),
            capture_output=True,
            text=True,
            timeout=scaled(180),
        )
    except BaseException:
        print(stack.logs())
        raise
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + stack.logs()
    out = result.stdout
    assert "(pid " in out and "not on this host); asking it to exit at once" in out
    assert "the caller is told at once" in out
    assert "restarted it as pid" in out  # by the restart policy, not a supervisor
    assert out.rstrip().endswith("linebus tour: done.")
    assert stack.restarts == {"echo": 1}

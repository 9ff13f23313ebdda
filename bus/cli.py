"""The ``linebus`` command line: run a line, call actors, watch events, inspect the broker.

Each subcommand imports what it needs when it runs, so ``linebus --help`` stays fast and never
needs a device extra. Exit codes: 0 success, 1 the call failed with a typed error, 2 bad usage or
config, 3 broker not reachable (``compat``: the script's own exit code).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any

__all__ = ["main", "parse_assignments"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class UsageError(Exception):
    """Bad command-line input; printed without a traceback, exit code 2."""


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` words into arguments.

    A value is JSON when it parses as JSON (``n=3``, ``ok=true``, ``ch=[1,2]``, ``s='"07"'``),
    else the plain string; ``key=@path`` reads the file's bytes.

    Raises:
        UsageError: a word has no ``=``, an empty key, or names a file that cannot be read.
    """
    args: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f"argument {item!r} is not key=value (example: channel=1 name='\"fw\"' data=@fw.bin)"
            )
        if raw.startswith("@") and len(raw) > 1:
            try:
                with open(raw[1:], "rb") as handle:
                    args[key] = handle.read()
            except OSError as exc:
                raise UsageError(f"argument {key}: cannot read {raw[1:]}: {exc.strerror}") from None
            continue
        try:
            args[key] = json.loads(raw)
        except ValueError:
            args[key] = raw
    return args


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (``--timeout``, ``--idle``).

    Raises:
        argparse.ArgumentTypeError: anything else (argparse prints it as a usage error, exit 2).
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return {"$bytes": len(data), "base64": base64.b64encode(data).decode()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), ensure_ascii=False), flush=True)


def _client(args: argparse.Namespace) -> Any:
    from bus.client import Client, ClientKeys

    # --key/--broker-key, else LINEBUS_KEY_FILE/LINEBUS_BROKER_KEY_FILE (or their value forms);
    # a key configured but unusable stops here (exit 2), never falling back to plaintext.
    keys = ClientKeys.load(key_file=args.key, broker_key_file=args.broker_key)
    return Client(
        args.endpoint, subscribe_endpoint=args.subscribe, timeout=args.timeout, keys=keys or False
    )


# --- subcommands -----------------------------------------------------------------------------


def cmd_call(args: argparse.Namespace) -> int:
    call_args = parse_assignments(args.assignments)
    view: Any = None
    if not args.json:
        from bus.terminal.progress import progress_view

        view = progress_view(f"{args.service} {args.command}")
    try:
        with _client(args) as bus:

            def show_progress(update: Any) -> None:
                if view is None:
                    _print_json({"progress": update})
                else:
                    view.update(update)

            result = bus.call(args.service, args.command, call_args, progress=show_progress)
    finally:
        if view is not None:
            view.close()
    if args.out and isinstance(result, (bytes, bytearray)):
        with open(args.out, "wb") as handle:
            handle.write(result)
        result = {"written": args.out, "bytes": len(result)}
    if args.json:
        _print_json({"result": result})
    else:
        print(json.dumps(_jsonable(result), indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_services(args: argparse.Namespace) -> int:
    with _client(args) as bus:
        rows = bus.services()
    if args.json:
        for row in rows:
            _print_json(row)
        return EXIT_OK
    if not rows:
        print("no services have registered")
        return EXIT_OK
    from bus.terminal.tables import print_table, services_table

    print_table(*services_table(rows))
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    with _client(args) as bus:
        info = bus.describe(args.service)
    if args.json:
        _print_json(info)
        return EXIT_OK
    print(f"{info['name']} ({info['kind']}), {info['state']}, pid {info.get('pid')}")
    if info.get("doc"):
        print(f"  {info['doc'].splitlines()[0]}")
    for name, cmd in sorted(info.get("commands", {}).items()):
        params = ", ".join(
            f"{a['name']}: {a['type']}" + ("" if a["required"] else f" = {a.get('default')!r}")
            for a in cmd["args"]
        )
        flags = "".join(
            f" [{flag}]" for flag in ("progress", "privileged") if cmd.get(flag) is True
        )
        print(f"\n  {name}({params}) -> {cmd['returns']}{flags}")
        for line in (cmd.get("doc") or "").splitlines():
            print(f"      {line}")
    return EXIT_OK


def cmd_lookup(args: argparse.Namespace) -> int:
    """Which services drive a device address (the broker's ``lookup``, PROTOCOL.md §13)."""
    from bus.protocol import BROKER_SERVICE

    query = {k: v for k, v in (("address", args.address), ("kind", args.kind)) if v is not None}
    if not query:
        raise UsageError("lookup: give an ADDRESS, --kind, or both")
    with _client(args) as bus:
        rows = bus.call(BROKER_SERVICE, "lookup", query)
    if args.json:
        for row in rows:
            _print_json(row)
        return EXIT_OK
    if not rows:
        print("no service drives it (or none you may call)")
        return EXIT_OK
    print(f"{'NAME':<20} {'KIND':<12} {'STATE':<6} DEVICES")
    for row in rows:
        print(
            f"{row['name']:<20} {row['kind'] or '-':<12} {row['state']:<6} {' '.join(row['devices'])}"
        )
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as bus:
        stats = bus.stats()
    if args.json:
        _print_json(stats)
    else:
        from bus.terminal.tables import print_stats

        print_stats(stats)
    return EXIT_OK


def cmd_top(args: argparse.Namespace) -> int:
    """A live view of the line (bus/terminal/top.py); ``--once`` prints one frame."""
    from bus.terminal.top import run_top

    with _client(args) as bus:
        endpoint = args.endpoint or "tcp://127.0.0.1:7750"
        return run_top(bus, endpoint=endpoint, once=args.once, interval=args.interval)


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the broker (or ``args.service``) is up, 1 when the service is not, 3 when the
    broker does not answer: the health check of a container, or of a script's wait loop."""
    from bus.errors import BrokerUnreachable, BusError, ConfigError
    from bus.protocol import BROKER_SERVICE

    service = args.service or BROKER_SERVICE
    try:
        with _client(args) as bus:
            if service == BROKER_SERVICE:
                bus.ping()
                row: dict[str, Any] = {"name": service, "state": "up", "kind": "broker"}
            else:
                rows = {r["name"]: r for r in bus.services()}
                row = rows.get(service) or {"name": service, "state": "unregistered"}
    except BrokerUnreachable:
        return _health_line(args, service, "unreachable", EXIT_UNREACHABLE)
    except ConfigError:  # our own endpoint or key is unusable: a usage error (2), not unhealthy
        raise
    except BusError as exc:  # the broker answered, with a refusal (e.g. our key is unknown)
        return _health_line(args, service, f"error: {exc}", EXIT_FAILED)
    if row["state"] == "up":
        return _health_line(args, service, "up", EXIT_OK, row)
    return _health_line(args, service, str(row["state"]), EXIT_FAILED, row)


def _health_line(
    args: argparse.Namespace,
    service: str,
    state: str,
    code: int,
    row: dict[str, Any] | None = None,
) -> int:
    endpoint = args.endpoint or "tcp://127.0.0.1:7750"
    if args.json:
        _print_json({"service": service, "state": state, "healthy": code == EXIT_OK, **(row or {})})
    elif code == EXIT_UNREACHABLE:
        print(f"unhealthy: the broker at {endpoint} does not answer", flush=True)
    elif code == EXIT_OK:
        pid = f", pid {row['pid']}" if row and row.get("pid") else ""
        print(f"healthy: {service} is up at {endpoint}{pid}", flush=True)
    else:
        print(f"unhealthy: {service} is {state} at {endpoint}", flush=True)
    return code


def cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as bus:
        # A subscription alone never learns that no broker is there: ask it first, so a watch
        # with no broker exits 3 within --timeout like every other command.
        bus.ping()
        return _watch(args, bus)


def _watch(args: argparse.Namespace, bus: Any) -> int:
    with bus.subscribe(*args.prefixes, timeout=args.idle) as sub:
        for seen, event in enumerate(sub, start=1):
            if args.json:
                _print_json(
                    {
                        "topic": event.topic,
                        "src": event.src,
                        "seq": event.seq,
                        "ts": event.ts,
                        "missed": event.missed,
                        "data": event.data,
                    }
                )
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
                gap = f"  (missed {event.missed})" if event.missed else ""
                data = json.dumps(_jsonable(event.data), ensure_ascii=False)
                print(f"{stamp} {event.topic} #{event.seq} {data}{gap}", flush=True)
            if args.count and seen >= args.count:
                break
    return EXIT_OK


def cmd_broker(args: argparse.Namespace) -> int:
    from bus.broker import serve

    # [broker] and [security] of the config (CURVE, access lists, audit log); SIGHUP re-reads
    # keys and access lists from it, as the privileged `reload` command of the broker does.
    serve(
        args.config,
        overrides={
            "command": args.bind,
            "publish": args.publish_bind,
            "subscribe": args.subscribe_bind,
            "metrics": args.metrics,
        },
    )
    return EXIT_OK


def cmd_actor(args: argparse.Namespace) -> int:
    from bus import config as config_mod
    from bus.host import run_actor

    run_actor(config_mod.load(args.config), args.name)
    return EXIT_OK


def cmd_simulator(args: argparse.Namespace) -> int:
    from bus import config as config_mod

    config = config_mod.load(args.config)
    specs = {sim.name: sim for sim in config.simulators}
    if args.name not in specs:
        raise UsageError(f"{args.config}: no simulator named {args.name!r} (have {sorted(specs)})")
    spec = specs[args.name]
    # Replace this process, as `linebus up` would start it: same pid, signals go straight to it.
    os.execv(sys.executable, [sys.executable, "-m", spec.module, *spec.args])


def cmd_up(args: argparse.Namespace) -> int:
    from bus import config as config_mod
    from bus.supervisor import Supervisor

    supervisor = Supervisor(config_mod.load(args.config))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        supervisor.start()
    except BaseException:
        supervisor.stop()
        raise
    print(
        f"linebus is up ({len(supervisor.processes)} processes). Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    supervisor.run(stop)
    return EXIT_OK


def cmd_web(args: argparse.Namespace) -> int:
    """Serve the dashboard and the HTTP/JSON gateway (bus.web) until SIGINT/SIGTERM."""
    try:
        from bus.web.app import serve
        from bus.web.launch import launch_settings
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"linebus web needs the web extra ({exc.name} is missing): pip install 'linebus[web]'"
        ) from None
    from bus import config as config_mod
    from bus.priority import apply_nice

    config = config_mod.load(args.config) if args.config else None
    launch = launch_settings(
        config,
        endpoint=args.endpoint,
        subscribe=args.subscribe,
        key=args.key,
        broker_key=args.broker_key,
        listen=args.listen,
        tokens=args.tokens,
        keys_dir=args.keys,
        insecure=args.insecure,
        call_timeout_s=args.timeout,
        nice=args.nice,
    )
    # The bus's own processes come first on a busy controller ([web] nice, WebConfig).
    apply_nice(launch.nice, "[web]")
    serve(launch.settings, launch.listen)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from bus.demo import run_demo

    return run_demo(args.config)


def cmd_tour(args: argparse.Namespace) -> int:
    from bus.demo import run_tour

    return run_tour(args.config)


def cmd_bench(args: argparse.Namespace) -> int:
    from bus.bench import main as bench_main

    return bench_main(args.rest)


def cmd_ingest(args: argparse.Namespace) -> int:
    try:
        from actors.telemetry.ingest_server import main as ingest_main
    except ModuleNotFoundError as exc:
        raise UsageError(f"the ingestion server is not available: {exc}") from None
    return int(ingest_main(args.rest) or 0)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from bus.security.keys import generate_keypair

    made = generate_keypair(args.dir, args.name, overwrite=args.force)
    if args.json:
        _print_json(
            {
                "name": args.name,
                "public_file": str(made.public_path),
                "secret_file": str(made.secret_path),
                "public_key": made.public_key.decode(),
            }
        )
        return EXIT_OK
    print(f"public key  {made.public_path}  (give it to the broker's keys directory)")
    print(f"secret key  {made.secret_path}  (mode 0600: keep it to yourself)")
    print(f"identity    {args.name}  public key {made.public_key.decode()}")
    return EXIT_OK


def cmd_keys_prepare(args: argparse.Namespace) -> int:
    from bus import config as config_mod
    from bus.supervisor import LineKeys

    config = config_mod.load(args.config)
    keys = LineKeys.prepare(config)
    if keys is None:
        raise UsageError(f"{args.config}: the line is not secured (no [security] key)")
    if args.json:
        _print_json({"keys_dir": str(keys.keys_dir), "generated": list(keys.generated)})
    else:
        made = ", ".join(keys.generated) or "nothing: every key existed"
        print(f"keys of {args.config} in {keys.keys_dir}; generated {made}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from bus.security.audit import format_record, parse_time, query

    if args.file:
        path = args.file
    else:
        from bus import config as config_mod

        config = config_mod.load(args.config)
        if config.security.audit_log is None:
            raise UsageError(f"{args.config}: [security] names no audit_log")
        path = str(config.security.audit_log)
    try:
        since = None if args.since is None else parse_time(args.since)
        until = None if args.until is None else parse_time(args.until)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def malformed(number: int, problem: str) -> None:
        print(f"linebus: {path}:{number}: {problem}", file=sys.stderr)

    for record in query(
        path,
        identity=args.identity,
        service=args.service,
        command=args.command,
        since=since,
        until=until,
        last=args.last,
        on_malformed=malformed,
    ):
        if args.json:
            print(json.dumps(record.to_json(), ensure_ascii=False, default=str), flush=True)
        else:
            print(format_record(record), flush=True)
    return EXIT_OK


def cmd_compat(args: argparse.Namespace) -> int:
    from bus.client import ENV_BROKER_KEY, ENV_BROKER_KEY_FILE, ENV_KEY, ENV_KEY_FILE, ClientKeys
    from clients.compat import run_script

    # A key configured but unusable stops here (exit 2), before the script runs.
    ClientKeys.load(key_file=args.key, broker_key_file=args.broker_key)
    if not os.path.isfile(args.script):
        raise UsageError(f"no such script: {args.script}")
    # The script's facades take the bus from the environment, as their vendor constructors
    # have no bus argument: the options become the variables every linebus client reads.
    for variable, value, value_form in (
        ("LINEBUS_ENDPOINT", args.endpoint, None),
        ("LINEBUS_SUBSCRIBE", args.subscribe, None),
        (ENV_KEY_FILE, args.key, ENV_KEY),
        (ENV_BROKER_KEY_FILE, args.broker_key, ENV_BROKER_KEY),
    ):
        if value:
            os.environ[variable] = value
            if value_form is not None:
                os.environ.pop(value_form, None)  # the option wins over the variable's value form
    return run_script(args.script, args.args)


_PASS_THROUGH = {"bench": cmd_bench, "ingest": cmd_ingest}


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``linebus``."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--endpoint",
        default=os.environ.get("LINEBUS_ENDPOINT"),
        help="broker command endpoint (env LINEBUS_ENDPOINT; default tcp://127.0.0.1:7750)",
    )
    connection.add_argument(
        "--subscribe",
        default=os.environ.get("LINEBUS_SUBSCRIBE"),
        help="broker subscribe endpoint (default: beside the command endpoint: its port + 2, "
        "or ipc://DIR/subscribe for ipc://DIR/command)",
    )
    connection.add_argument(
        "--key",
        metavar="FILE",
        help="our secret key file on a secured line (env LINEBUS_KEY_FILE, or LINEBUS_KEY)",
    )
    connection.add_argument(
        "--broker-key",
        metavar="FILE",
        help="the broker's public key file (env LINEBUS_BROKER_KEY_FILE, or LINEBUS_BROKER_KEY)",
    )
    common = argparse.ArgumentParser(add_help=False, parents=[connection])
    common.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds to wait for an answer (default 10)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object per line")

    parser = argparse.ArgumentParser(
        prog="linebus", description="linebus: the message bus of a production-line controller."
    )
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "up", help="run the line of a config: broker, simulators, actors (supervised)"
    )
    p.add_argument("config")
    p.add_argument("--json", action="store_true", help="log JSON lines (every process of the line)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "web",
        parents=[connection],
        help="serve the dashboard and the HTTP/JSON gateway (needs linebus[web])",
    )
    p.add_argument("--config", help="take [broker], [web] and the keys directory from this config")
    p.add_argument("--listen", help="HOST:PORT to serve on (default: [web] listen, 127.0.0.1:8750)")
    p.add_argument(
        "--tokens",
        metavar="FILE",
        help="tokens file (IDENTITY TOKEN a line, mode 0600): requests then need a bearer token"
        " and act as its identity",
    )
    p.add_argument(
        "--keys",
        metavar="DIR",
        help="on a secured line, the keys directory of the tokens' identities"
        " (default: the config's [security] keys)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without tokens",
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        help="the deadline of a gateway call that names none (default: [web] call_timeout_s, 30)",
    )
    p.add_argument(
        "--nice",
        type=int,
        choices=range(20),
        metavar="0-19",
        default=None,
        help="lower this process's CPU priority by this much (default: [web] nice, 10)",
    )
    p.set_defaults(func=cmd_web)

    p = sub.add_parser("demo", help="bring up the demo line, run a scripted tour, shut down")
    p.add_argument("config", nargs="?", default="configs/demo.toml")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "tour", help="run the demo's tour against a line that is already up (e.g. compose)"
    )
    p.add_argument("config", nargs="?", default="configs/demo.toml")
    p.set_defaults(func=cmd_tour)

    p = sub.add_parser("broker", help="run a broker alone")
    p.add_argument("--config", help="take [broker] from this config")
    p.add_argument("--json", action="store_true", help="log JSON lines")
    p.add_argument("--bind", help="command endpoint to bind")
    p.add_argument("--publish-bind", help="publish (XSUB) endpoint to bind")
    p.add_argument("--subscribe-bind", help="subscribe (XPUB) endpoint to bind")
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve /metrics (Prometheus text format) here, e.g. 127.0.0.1:9750",
    )
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("actor", help="run one actor of a config in this process")
    p.add_argument("config")
    p.add_argument("name")
    p.set_defaults(func=cmd_actor)

    p = sub.add_parser(
        "simulator",
        help="run one [[simulator]] of a config in this process (a container's command)",
    )
    p.add_argument("config")
    p.add_argument("name")
    p.set_defaults(func=cmd_simulator)

    p = sub.add_parser("call", parents=[common], help="call SERVICE COMMAND [key=value ...]")
    p.add_argument("service")
    p.add_argument("command")
    p.add_argument("assignments", nargs="*", metavar="key=value")
    p.add_argument("--out", help="write a bytes result to this file")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser(
        "watch", parents=[common], help="print events whose topic starts with PREFIX"
    )
    p.add_argument("prefixes", nargs="*", metavar="PREFIX")
    p.add_argument("--count", type=int, default=0, help="stop after this many events")
    p.add_argument(
        "--idle",
        type=positive_seconds,
        default=None,
        help="stop after this many seconds without an event",
    )
    p.set_defaults(func=cmd_watch)

    for name, func, text in (
        ("services", cmd_services, "list services: name, kind, state, since, restarts"),
        ("stats", cmd_stats, "the broker's routing counters and drops by reason"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "top",
        parents=[connection],
        help="a live view of the line: actors, restarts, running jobs, request rates (q quits)",
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--interval",
        type=positive_seconds,
        default=1.0,
        help="seconds between refreshes (default 1)",
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=5.0,
        help="seconds to wait for the broker's answers (default 5)",
    )
    p.set_defaults(func=cmd_top)

    p = sub.add_parser(
        "health",
        parents=[common],
        help="exit 0 if the broker (or SERVICE) is up, 1 if SERVICE is not, 3 if no broker",
    )
    p.add_argument("service", nargs="?", help="a service name (default: the broker itself)")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser(
        "describe", parents=[common], help="a service's commands and their arguments"
    )
    p.add_argument("service")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser(
        "lookup",
        parents=[common],
        help="which services drive a device address (LAN host:port, serial port, uuid ...)",
    )
    p.add_argument(
        "address", nargs="?", help="the device's address, as its vendor library takes it"
    )
    p.add_argument("--kind", help="only actors of this kind (flashrunner, flux, discovery ...)")
    p.set_defaults(func=cmd_lookup)

    p = sub.add_parser(
        "compat",
        parents=[connection],
        help="run a script written for a vendor library (fr_comm, fluxclient, spotflow_device,"
        " rerobots) unchanged, its vendor imports served by the linebus facades",
    )
    p.add_argument("script", help="the Python script, run as `python SCRIPT ARGS...` would")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the script's arguments")
    p.set_defaults(func=cmd_compat)

    p = sub.add_parser("keys", help="CURVE keys of a secured line")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = keys_sub.add_parser(
        "generate", help="write NAME.key (public) and NAME.key_secret (0600) into --dir"
    )
    p.add_argument("name", help="the key's name: the identity the broker knows it by")
    p.add_argument("--dir", default="keys", help="where to write the files (default: ./keys)")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_keys_generate)

    p = keys_sub.add_parser(
        "prepare",
        help="make every key a secured line's config needs (broker, actors, operators)",
    )
    p.add_argument("config", help="the line's config, with a [security] table")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_keys_prepare)

    p = sub.add_parser("audit", help="query the audit log of privileged calls")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="read the audit log named by this line's [security]")
    where.add_argument("--file", help="read this audit log file")
    p.add_argument("--identity", help="only calls of this identity (key name)")
    p.add_argument("--service", help="only calls to this service")
    p.add_argument("--command", help="only calls of this command")
    p.add_argument("--since", help="from this time: ISO 8601, Unix seconds, or an age (15m, 2h)")
    p.add_argument("--until", help="before this time (same forms)")
    p.add_argument("--last", type=int, metavar="N", help="only the newest N matching records")
    p.add_argument("--json", action="store_true", help="print one JSON object per record")
    p.set_defaults(func=cmd_audit)

    # Listed for --help only: main() hands their arguments over untouched.
    sub.add_parser(
        "bench", help="measure the bus against raw ZeroMQ (--quick, --json; see docs/BENCHMARKS.md)"
    )
    sub.add_parser(
        "ingest",
        help="run the reference ingestion server (telemetry upstream; --help for its options)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``linebus``; returns the exit code."""
    from bus.logs import configure_logging, dump_stacks_on_signal

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _PASS_THROUGH:
        # These hand their whole argument list to another program's parser (argparse's
        # REMAINDER would swallow or reject options such as `--port`).
        args = argparse.Namespace(
            subcommand=argv[0], func=_PASS_THROUGH[argv[0]], rest=argv[1:], json=False
        )
    else:
        args = build_parser().parse_args(argv)
    if getattr(args, "json", False) and args.subcommand in ("up", "broker"):
        os.environ["LINEBUS_LOG_JSON"] = "1"  # children of `up` inherit it
    configure_logging()
    dump_stacks_on_signal()
    from bus.errors import BrokerUnreachable, BusError, ConfigError

    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"linebus: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"linebus: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokerUnreachable as exc:
        _report(args, exc)
        return EXIT_UNREACHABLE
    except BusError as exc:
        _report(args, exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _report(args: argparse.Namespace, exc: Any) -> None:
    if getattr(args, "json", False):
        _print_json(
            {
                "error": {
                    "code": getattr(exc, "remote_code", exc.code),
                    "message": exc.message,
                    "details": exc.details,
                }
            }
        )
    else:
        print(f"linebus: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

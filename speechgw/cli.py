"""The ``speechgw`` command line."""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import json
import logging
import os
import sqlite3
import sys
import urllib.parse
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, logs
from .errors import ConfigError

if TYPE_CHECKING:
    from .store import KeyInfo, UsageRecord

__all__ = ["main"]

_DEFAULT_CONFIG = Path("config/speechgw.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechgw", description="Speech recognition gateway")
    parser.add_argument("--version", action="version", version=f"speechgw {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config",
        help="YAML config file (default: $SPEECHGW_CONFIG, else ./config/speechgw.yaml if "
        "present, else the embedded default)",
    )
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--processes",
        type=_at_least_one,
        help="server processes sharing the port, each with its own models (overrides "
        "server.processes)",
    )
    serve.add_argument("--child", help=argparse.SUPPRESS)  # one of --processes' processes

    check = commands.add_parser(
        "check",
        help="validate the config as serve and a reload would, and say what it sets up; "
        "exit 2 with the error otherwise (run it before a SIGHUP)",
    )
    check.add_argument("--config", help="YAML config file (found as for serve)")

    keys = commands.add_parser("keys", help="manage the API keys kept in the store")
    keys.add_argument("--config", help="config file naming the store (as for serve)")
    # ``--config`` after the key command too (``keys list --config fleet.yaml``, as people
    # type it); SUPPRESS keeps the one given before the command when none comes after
    config_after = argparse.ArgumentParser(add_help=False)
    config_after.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser(
        "create", parents=[config_after], help="create a key and print it (only once)"
    )
    create.add_argument("name", help="the name logs and usage will show")
    listing = key_commands.add_parser(
        "list", parents=[config_after], help="list key names (never the keys)"
    )
    listing.add_argument(
        "--json",
        action="store_true",
        help="one JSON array: name, active, created and revoked (ISO 8601 UTC, or null)",
    )
    revoke = key_commands.add_parser(
        "revoke", parents=[config_after], help="revoke a key; it stops working at once"
    )
    revoke.add_argument("name")

    usage = commands.add_parser(
        "usage", help="usage per API key: totals, or each billed request (--requests)"
    )
    usage.add_argument("--config", help="config file naming the store (as for serve)")
    usage.add_argument(
        "--since",
        type=_moment,
        metavar="WHEN",
        help="only usage from this moment on: a date (YYYY-MM-DD, its midnight UTC) or an "
        "ISO 8601 time (2026-11-01T09:00:00+01:00; without an offset, UTC)",
    )
    usage.add_argument(
        "--until",
        type=_moment,
        metavar="WHEN",
        help="only usage before this moment (as --since; the moment itself is not included, "
        "so --since 2026-11-01 --until 2026-12-01 is November, and the next period starts "
        "where this one ends)",
    )
    usage.add_argument("--key", help="only this key name")
    usage.add_argument(
        "--requests",
        action="store_true",
        help="each billed request instead of totals, oldest first: CSV with a header line, "
        "or one JSON object a line with --json",
    )
    usage.add_argument("--json", action="store_true", help="machine-readable output")

    prune = commands.add_parser(
        "prune-usage",
        help="delete the usage ledger's rows from before a moment (keep them first with "
        "usage --requests --until the same moment)",
    )
    prune.add_argument("--config", help="config file naming the store (as for serve)")
    prune.add_argument(
        "--before",
        type=_moment,
        metavar="WHEN",
        required=True,
        help="delete the rows committed before this moment, a date (YYYY-MM-DD, its midnight "
        "UTC) or an ISO 8601 time, as usage --until takes it",
    )
    return parser


def _moment(text: str) -> float:
    """A date (its midnight UTC) or an ISO 8601 time (UTC unless it has an offset), as a Unix
    time: ledger rows are stamped in UTC, whatever the server's time zone."""
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date (YYYY-MM-DD) or an ISO 8601 time (YYYY-MM-DDTHH:MM[:SS][+HH:MM]): {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _utc(moment: float) -> datetime.datetime:
    """A Unix time as the command line shows it: in UTC, as the ledger counts."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC)


def _load(args: argparse.Namespace):  # -> Config
    from .loading import load_app_config

    path = args.config or os.environ.get("SPEECHGW_CONFIG")
    if path is None and _DEFAULT_CONFIG.is_file():
        path = str(_DEFAULT_CONFIG)
    config = load_app_config(path)
    server = config.server
    if getattr(args, "host", None) is not None:
        server = dataclasses.replace(server, host=args.host)
    if getattr(args, "port", None) is not None:
        server = dataclasses.replace(server, port=args.port)
    if getattr(args, "processes", None) is not None:
        server = dataclasses.replace(server, processes=args.processes)
    return dataclasses.replace(config, server=server), path


def _open_store(args: argparse.Namespace):  # -> Store
    from .loading import open_store

    config, _ = _load(args)
    store = open_store(config)
    if store is None:
        raise ConfigError("store.path: the store is turned off (null) in this config")
    return store


def _keys(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        if args.keys_command == "create":
            try:
                key = store.create_key(args.name)
            except ValueError as exc:
                print(f"speechgw: {exc}", file=sys.stderr)
                return 1
            print(key)
            print(f"created key {args.name!r}; it is shown only this once", file=sys.stderr)
        elif args.keys_command == "list":
            _print_keys(store.list_keys(), args.json)
        elif not store.revoke_key(args.name):
            print(f"speechgw: no active key named {args.name!r}", file=sys.stderr)
            return 1
        return 0
    finally:
        store.close()


def _print_keys(keys: list[KeyInfo], as_json: bool) -> None:
    """The keys' names, states and dates (never the keys, which are not kept): a line each,
    or one JSON array of ``{name, active, created, revoked}`` (ISO 8601 UTC, or null)."""

    def when(moment: float | None) -> str | None:
        return None if moment is None else _utc(moment).isoformat(timespec="seconds")

    if as_json:
        entries = [
            {
                "name": info.name,
                "active": info.revoked is None,
                "created": when(info.created),
                "revoked": when(info.revoked),
            }
            for info in keys
        ]
        print(json.dumps(entries, indent=2))
        return
    for info in keys:
        created = _utc(info.created)
        state = "active" if info.revoked is None else "revoked"
        print(f"{info.name}\t{state}\tcreated {created:%Y-%m-%d %H:%M} UTC")


def _usage(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        if args.requests:
            _print_requests(store.records(args.since, args.until, args.key), args.json)
            return 0
        totals = store.totals(args.since, args.until, args.key)
    finally:
        store.close()
    per_key: dict[str, dict] = {}
    for t in totals:
        entry = per_key.setdefault(
            t.key_name, {"key": t.key_name, "requests": 0, "audio_minutes": 0.0, "by": []}
        )
        entry["requests"] += t.requests
        entry["audio_minutes"] += t.audio_seconds / 60
        entry["by"].append(
            {
                "protocol": t.protocol,
                "backend": t.backend,
                "requests": t.requests,
                "audio_minutes": t.audio_seconds / 60,
            }
        )
    if args.json:
        print(json.dumps(list(per_key.values()), indent=2))
        return 0
    # columns as wide as their longest value, so that long key names keep them aligned
    wide_key = max([20, *(len(t.key_name) for t in totals)])
    wide_backend = max([12, *(len(t.backend) for t in totals)])
    print(
        f"{'key':<{wide_key}} {'protocol':<10} {'backend':<{wide_backend}} {'requests':>9} "
        f"{'audio min':>10}"
    )
    for entry in per_key.values():
        for part in entry["by"]:
            print(
                f"{entry['key']:<{wide_key}} {part['protocol']:<10} "
                f"{part['backend']:<{wide_backend}} {part['requests']:>9} "
                f"{part['audio_minutes']:>10.2f}"
            )
        print(
            f"{entry['key']:<{wide_key}} {'total':<10} {'':<{wide_backend}} "
            f"{entry['requests']:>9} {entry['audio_minutes']:>10.2f}"
        )
    return 0


_REQUEST_FIELDS = (
    "request_id",
    "time",
    "key",
    "protocol",
    "backend",
    "task",
    "language",
    "machine_id",
    "audio_seconds",
    "processing_seconds",
)


def _print_requests(records: Generator[UsageRecord, None, None], as_json: bool) -> None:
    """Each ledger row, one a line, written as it is read (a ledger of millions of rows streams
    through; a reader that stops early, ``| head``, closes the query on the way out)."""
    out = csv.writer(sys.stdout, lineterminator="\n")
    with contextlib.closing(records):
        if not as_json:
            out.writerow(_REQUEST_FIELDS)
        for r in records:
            row = (
                r.request_id,
                _utc(r.at).isoformat(timespec="milliseconds"),
                r.key_name,
                r.protocol,
                r.backend,
                r.task,
                r.language,
                r.machine_id,
                round(r.audio_seconds, 3),
                round(r.processing_seconds, 3),
            )
            if as_json:
                print(json.dumps(dict(zip(_REQUEST_FIELDS, row, strict=True))))
            else:
                out.writerow(row)


def _prune_usage(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        deleted = store.prune(args.before)
    finally:
        store.close()
    print(f"deleted {deleted} usage rows from before {_utc(args.before).isoformat()}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """``speechgw check``: the config's verdict without loading a model or opening a port."""
    config, path = _load(args)
    _check_store_path(config)
    server = config.server
    scheme = "https/wss" if server.certfile else "http/ws"
    print(f"{path or 'embedded default'}: valid")
    processes = f", {server.processes} processes" if server.processes > 1 else ""
    print(f"listen: {server.host}:{server.port} ({scheme}{processes})")
    for backend in config.backends:
        print(f"backend {backend.name}: {backend.type}{_options(backend.options)}")
    for number, rule in enumerate(config.routing, 1):
        conditions = [
            f"{name}={','.join(values)}"
            for name, values in dataclasses.asdict(rule.match).items()
            if values
        ]
        spares = f" (fallback: {', '.join(rule.fallback)})" if rule.fallback else ""
        print(f"route {number}: {' '.join(conditions) or 'any job'} -> {rule.backend}{spares}")
    print(f"store: {_store_place(config)}")
    from_env = "set" if os.environ.get("SERVER_API_KEY") else "not set"
    print(f"keys: {len(config.auth.keys)} in the config; SERVER_API_KEY {from_env}")
    return 0


_SECRET = ("key", "secret", "password", "token")


def _options(options: object) -> str:
    """A backend's options that differ from their defaults, secrets masked: what the admin
    set, in the backend's own terms (the command line knows no backend)."""
    if not dataclasses.is_dataclass(options):
        return ""
    changed = []
    for option in dataclasses.fields(options):
        value = getattr(options, option.name)
        if option.default is not dataclasses.MISSING and value == option.default:
            continue
        if any(word in option.name for word in _SECRET) and value:
            value = "***"
        changed.append(f"{option.name}={value}")
    return f" ({', '.join(changed)})" if changed else ""


def _check_store_path(config) -> None:  # config: Config
    """Refuse a SQLite ``store.path`` that this user could not create or write, as serve would
    (``speechgw check`` runs as the service's user in the systemd unit), without creating it."""
    if config.store.url is not None or config.store.path is None:
        return
    path = Path(config.store.path).expanduser().absolute()
    if path.exists():
        if not path.is_file():
            problem = "is not a file"
        elif not os.access(path, os.R_OK | os.W_OK):
            problem = "is not writable by this user"
        else:
            return
    else:
        place = path.parent
        while not place.exists():  # serve creates the missing folders under the nearest one
            place = place.parent
        if not place.is_dir():
            problem = f"cannot be created: {place} is not a folder"
        elif not os.access(place, os.W_OK | os.X_OK):
            problem = f"cannot be created: {place} is not writable by this user"
        else:
            return
    raise ConfigError(f"store.path: {path} {problem}")


def _store_place(config) -> str:  # config: Config
    store = config.store
    if store.url is not None:
        parts = urllib.parse.urlsplit(store.url)
        if parts.password is not None:  # never print a secret
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            parts = parts._replace(netloc=netloc)
        return f"PostgreSQL {urllib.parse.urlunsplit(parts)}"
    if store.path is None:
        return "none (no keys in a store, no usage ledger)"
    return f"SQLite {Path(store.path).resolve()}"


def _serve(args: argparse.Namespace) -> int:
    logs.configure("INFO", "text")  # until the config says otherwise
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per request is ours
    # a pool's every failed reconnection is a warning; the store says once that it is down
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    config, path = _load(args)
    logs.configure(config.logging.level, config.logging.format)
    from .app import build_app
    from .server import CannotListen, bind, bind_shared, event_loop_factory, run

    loop_factory = event_loop_factory(config.server.event_loop)
    place = None
    if args.child:  # one of the processes of --processes, on the port its parent holds
        from .processes import child_place

        place = child_place(args.child)
    host, shared = config.server.host, config.server.processes > 1
    ports = [config.server.port]
    if config.metrics.port is not None:
        ports.append(config.metrics.port)
    try:  # before the models load: a taken port is said at once
        if shared and place is None:
            sockets = [bind_shared(host, port) for port in ports]
        else:
            sockets = [bind(host, port, shared) for port in ports]
    except CannotListen as exc:
        print(f"speechgw: {exc}", file=sys.stderr)
        return 1
    if shared and place is None:
        from .processes import serve_processes

        port = sockets[0].getsockname()[1]  # chosen by the kernel where the config says 0
        return serve_processes(config.server.processes, sockets, path, host, port)
    app = build_app(config, place=place)
    store = app.state.gateway.store
    if store is not None:
        store.prepare()
    logging.getLogger("speechgw").info(
        "speechgw %s serving on %s:%d (config: %s, event loop: %s)",
        __version__,
        config.server.host,
        config.server.port,
        path or "embedded default",
        loop_factory.__module__.split(".")[0],
    )
    try:
        run(app, config, path, loop_factory, sockets)
    except Exception:
        error = app.state.gateway.startup_error
        if error is None:
            raise
        print(f"speechgw: {error}", file=sys.stderr)
        return 1
    return 0


_COMMANDS = {
    "serve": _serve,
    "check": _check,
    "keys": _keys,
    "usage": _usage,
    "prune-usage": _prune_usage,
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    bounds = (getattr(args, "since", None), getattr(args, "until", None))
    if None not in bounds and bounds[1] <= bounds[0]:
        parser.error("--until must come after --since")
    from .store import StoreUnavailable

    command = _COMMANDS[args.command]
    try:
        code = command(args)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at exit
        return code
    except ConfigError as exc:
        print(f"speechgw: config error: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"speechgw: the store is unreachable: {exc}", file=sys.stderr)
        return 1
    except sqlite3.OperationalError as exc:  # "database is locked": another process's write
        print(f"speechgw: the SQLite store could not be used: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `speechgw usage | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush does not fail again
        return 0

"""The ``speechgw`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ConfigError

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
    return parser


def _load(args: argparse.Namespace):  # -> Config
    from .app import backend_options, default_config
    from .config import load_config_file

    path = args.config or os.environ.get("SPEECHGW_CONFIG")
    if path is None and _DEFAULT_CONFIG.is_file():
        path = str(_DEFAULT_CONFIG)
    config = load_config_file(path, backend_options=backend_options) if path else default_config()
    if not config.backends:
        defaults = default_config()
        config = dataclasses.replace(config, backends=defaults.backends, routing=defaults.routing)
    server = config.server
    if args.host is not None:
        server = dataclasses.replace(server, host=args.host)
    if args.port is not None:
        server = dataclasses.replace(server, port=args.port)
    return dataclasses.replace(config, server=server), path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per request is ours
    log = logging.getLogger("speechgw")
    try:
        config, path = _load(args)
        logging.getLogger().setLevel(config.logging.level)
        from .app import build_app
        from .server import run

        app = build_app(config)
    except ConfigError as exc:
        print(f"speechgw: config error: {exc}", file=sys.stderr)
        return 2
    log.info(
        "speechgw %s serving on %s:%d (config: %s)",
        __version__,
        config.server.host,
        config.server.port,
        path or "embedded default",
    )
    run(app, config)
    return 0

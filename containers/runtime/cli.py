"""Command line shared by the model servers: `python -m containers.<name> --port 3000`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

from aiohttp import web

from containers.runtime.model import Model
from containers.runtime.server import DEFAULT_MAX_BODY_BYTES, create_app


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--log-level", default="INFO")
    return parser


def serve(
    parser: argparse.ArgumentParser,
    build: Callable[[argparse.Namespace], Model],
    argv: Sequence[str] | None = None,
) -> None:
    """Parses arguments, builds the model and serves it until SIGINT/SIGTERM."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = build(args)
    app = create_app(model, max_body_bytes=args.max_body_bytes)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)

"""Command line shared by the model servers: `python -m containers.<name> --port 3000 [--mqtt URL --pool NAME]`."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence

from aiohttp import web

from containers.runtime.attest import KEY_FILE_ENV, AttestationError, key_file_from_env, parse_digest, read_key_file
from containers.runtime.model import Model
from containers.runtime.server import DEFAULT_MAX_BODY_BYTES, BatchConfig, create_app
from containers.runtime.worker import add_worker


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every model server shares (host, port, body limit, batching, MQTT worker mode)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float16, bfloat16 or float32 (default: fp16 on cuda)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="largest dynamic batch (1 = no batching)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    parser.add_argument(
        "--mqtt", default=None, metavar="URL", help="also take jobs from this broker (mqtt://host:port)"
    )
    parser.add_argument("--pool", default="default", help="worker pool name: workers of one pool share jobs")
    parser.add_argument("--mqtt-inflight", type=int, default=64, help="jobs a worker takes at once")
    parser.add_argument("--mqtt-username", default=None, help="broker user name")
    parser.add_argument(
        "--mqtt-password-env", default="INFERA_MQTT_PASSWORD", help="env variable holding the broker password"
    )
    parser.add_argument(
        "--attestation-key-file",
        default=None,
        metavar="PATH",
        help=f"hex private key (mode 0600) to sign attestations with (default: ${KEY_FILE_ENV}); never logged",
    )
    parser.add_argument(
        "--model-digest",
        default=None,
        metavar="HEX",
        help="32-byte model digest attestations name (default: sha256 of the model's weight files, taken at load)",
    )
    parser.add_argument("--shutdown-timeout-s", type=float, default=60.0, help="time to finish in-flight work")
    parser.add_argument("--log-level", default="INFO")
    return parser


def add_languages_option(parser: argparse.ArgumentParser, default: str) -> None:
    """`--languages`: the ISO 639-1 codes a text model reads (comma-separated), or `any` for no language check."""
    parser.add_argument(
        "--languages",
        default=None,
        help=f"languages the model reads, e.g. en or en,de; 'any' checks none (default: {default})",
    )


def parse_languages(value: str) -> tuple[str, ...] | None:
    """`"en,de"` -> `("en", "de")`; `"any"` -> None (no language check). Raises ValueError for an empty list."""
    if value.strip().lower() == "any":
        return None
    codes = tuple(c.strip().lower() for c in value.split(",") if c.strip())
    if not codes:
        raise ValueError("--languages needs one or more codes, or 'any'")
    return codes


def serve(
    parser: argparse.ArgumentParser,
    build: Callable[[argparse.Namespace], Model],
    argv: Sequence[str] | None = None,
) -> None:
    """Parses arguments, builds the model and serves it until SIGINT/SIGTERM, finishing in-flight work."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key_file = key_file_from_env(args.attestation_key_file)
    try:  # before the model loads: a bad key file stops the container at once, saying what to fix
        key = read_key_file(key_file) if key_file else None
        digest = parse_digest(args.model_digest) if args.model_digest else None
    except AttestationError as exc:
        parser.exit(2, f"error: {exc}\n")
    model = build(args)
    app = create_app(
        model,
        max_body_bytes=args.max_body_bytes,
        batching=BatchConfig(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms),
        attestation_key=key,
        model_digest=digest,
    )
    if args.mqtt:
        add_worker(
            app,
            args.mqtt,
            args.pool,
            max_inflight=args.mqtt_inflight,
            username=args.mqtt_username,
            password=os.environ.get(args.mqtt_password_env),  # from the environment: never on the command line
        )
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=args.shutdown_timeout_s,
        handler_cancellation=True,  # a caller that hangs up (a node's timeout) frees what its request held
    )

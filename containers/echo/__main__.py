from containers.echo.model import EchoModel
from containers.runtime.cli import base_parser, serve


def main() -> None:
    """Runs the echo model server (answers with its input)."""
    parser = base_parser("Infera echo server: answers with its input.")
    parser.add_argument("--name", default="echo")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="simulated compute time per batch")
    serve(parser, lambda args: EchoModel(args.name, delay_ms=args.delay_ms))


if __name__ == "__main__":
    main()

from containers.echo.model import EchoModel
from containers.runtime.cli import base_parser, serve


def main() -> None:
    parser = base_parser("Infera echo server: answers with its input.")
    parser.add_argument("--name", default="echo")
    serve(parser, lambda args: EchoModel(args.name))


if __name__ == "__main__":
    main()

from containers.embed.model import EmbedModel
from containers.runtime.cli import base_parser, serve


def main() -> None:
    """Runs the embed model server."""
    parser = base_parser("Infera sentence embeddings (MiniLM), int8-quantized for on-chain use.")
    parser.add_argument("--name", default="embed/minilm-l6@1", help="model name reported by /info")
    parser.add_argument("--model-path", default=None, help="sentence-embedding model folder (default: packaged MiniLM)")
    serve(parser, lambda a: EmbedModel(a.name, model_path=a.model_path, device=a.device, dtype=a.dtype))


if __name__ == "__main__":
    main()

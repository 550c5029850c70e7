from containers.embed.model import DEFAULT_CONSENSUS_STEP_E12, EmbedModel
from containers.runtime.cli import add_languages_option, base_parser, parse_languages, serve


def main() -> None:
    """Runs the embed model server."""
    parser = base_parser("Infera sentence embeddings (MiniLM), int8-quantized for on-chain use.")
    parser.add_argument("--name", default="embed/minilm-l6@1", help="model name reported by /info")
    parser.add_argument("--model-path", default=None, help="sentence-embedding model folder (default: packaged MiniLM)")
    parser.add_argument(
        "--consensus-step-e12",
        type=int,
        default=DEFAULT_CONSENSUS_STEP_E12,
        help="consensus answers: the fixed int8 scale in units of 1e-12 (default 1e10: 2 decimals; 0: sign bits)",
    )
    add_languages_option(parser, "en")
    serve(
        parser,
        lambda a: EmbedModel(
            a.name,
            model_path=a.model_path,
            device=a.device,
            dtype=a.dtype,
            consensus_step_e12=a.consensus_step_e12,
            languages=parse_languages(a.languages or "en"),
        ),
    )


if __name__ == "__main__":
    main()

from containers.generate.model import GenerateModel
from containers.runtime.cli import base_parser, serve


def main() -> None:
    """Runs the generate model server."""
    parser = base_parser("Infera text generation: any causal LM, greedy decoding, streamed off-chain.")
    parser.add_argument(
        "--model-path", required=True, help="causal LM checkpoint (local folder, or a name with hub access)"
    )
    parser.add_argument("--name", default=None, help="model name (default: generate/<folder name>)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="cap on maxNewTokens a request may ask for")
    serve(
        parser,
        lambda a: GenerateModel(a.model_path, a.name, max_new_tokens=a.max_new_tokens, device=a.device, dtype=a.dtype),
    )


if __name__ == "__main__":
    main()

from containers.llm.engine import DEFAULT_ROWS
from containers.llm.model import DEFAULT_NAME, LLMModel
from containers.runtime.cli import base_parser, serve


def main() -> None:
    """Runs the LLM model server (the packaged SmolLM2-135M-Instruct unless --model-path is given)."""
    parser = base_parser(
        "Infera LLM: an instruct model answering chat turns with free text, one of allowed values, an integer in a "
        "range or JSON of a schema; greedy, continuous batching with batch-invariant results."
    )
    parser.add_argument(
        "--model-path",
        default=None,
        help="a local causal LM folder or .gguf file with a chat template (default: the packaged SmolLM2 GGUF)",
    )
    parser.add_argument("--name", default=None, help=f"model name (default: {DEFAULT_NAME} for the packaged model)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="cap on maxNewTokens a request may ask for")
    parser.add_argument("--max-context", type=int, default=2048, help="prompt + answer tokens a request may use")
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help="requests generated together (the fixed decode batch)"
    )
    serve(
        parser,
        lambda a: LLMModel(
            a.model_path,
            a.name,
            max_new_tokens=a.max_new_tokens,
            max_context=a.max_context,
            rows=a.rows,
            device=a.device,
            dtype=a.dtype,
        ),
    )


if __name__ == "__main__":
    main()

from containers.classify.model import ZeroShotClassifier, load_labels
from containers.runtime.cli import base_parser, serve


def main() -> None:
    parser = base_parser("Infera text classifier: zero-shot over MiniLM sentence embeddings.")
    parser.add_argument("--name", default="classify/minilm-sentiment@1", help="model name reported by /info")
    parser.add_argument("--model-path", default=None, help="sentence-embedding model folder (default: packaged MiniLM)")
    parser.add_argument("--labels", default=None, help='JSON file: {"label": ["description", ...], ...}')
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    serve(
        parser,
        lambda a: ZeroShotClassifier(
            a.name,
            model_path=a.model_path,
            labels=load_labels(a.labels) if a.labels else None,
            temperature=a.temperature,
            device=a.device,
        ),
    )


if __name__ == "__main__":
    main()

from argparse import Namespace

from containers.classify.model import CheckpointClassifier, ZeroShotClassifier, load_labels
from containers.runtime.cli import base_parser, serve
from containers.runtime.model import Model


def build(a: Namespace) -> Model:
    """The classifier the options ask for: a fine-tuned checkpoint, or the packaged zero-shot MiniLM."""
    if a.checkpoint:
        return CheckpointClassifier(a.checkpoint, a.name, device=a.device, dtype=a.dtype)
    return ZeroShotClassifier(
        a.name or "classify/minilm-sentiment@1",
        model_path=a.model_path,
        labels=load_labels(a.labels) if a.labels else None,
        temperature=a.temperature,
        device=a.device,
        dtype=a.dtype,
    )


def main() -> None:
    """Runs the classify model server (HTTP, or an MQTT worker with `--mqtt`)."""
    parser = base_parser("Infera text classifier: zero-shot over MiniLM embeddings, or a classification checkpoint.")
    parser.add_argument("--name", default=None, help="model name (default: classify/minilm-sentiment@1)")
    parser.add_argument("--checkpoint", default=None, help="sequence-classification checkpoint (path or name)")
    parser.add_argument("--model-path", default=None, help="zero-shot: embedding model folder (default: MiniLM)")
    parser.add_argument("--labels", default=None, help='zero-shot: JSON file {"label": ["description", ...]}')
    parser.add_argument("--temperature", type=float, default=0.05, help="zero-shot: softmax temperature")
    serve(parser, build)


if __name__ == "__main__":
    main()

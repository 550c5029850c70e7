from argparse import Namespace

from containers.classify.model import (
    DEFAULT_CONSENSUS_SCORE_STEP_E6,
    CheckpointClassifier,
    ZeroShotClassifier,
    load_labels,
)
from containers.runtime.cli import add_languages_option, base_parser, parse_languages, serve
from containers.runtime.model import Model


def build(a: Namespace) -> Model:
    """The classifier the options ask for: a fine-tuned checkpoint, or the packaged zero-shot MiniLM."""
    if a.checkpoint:
        return CheckpointClassifier(
            a.checkpoint,
            a.name,
            device=a.device,
            dtype=a.dtype,
            consensus_score_step_e6=a.consensus_score_step_e6,
            languages=parse_languages(a.languages or "any"),
        )
    return ZeroShotClassifier(
        a.name or "classify/minilm-sentiment@1",
        model_path=a.model_path,
        labels=load_labels(a.labels) if a.labels else None,
        temperature=a.temperature,
        device=a.device,
        dtype=a.dtype,
        consensus_score_step_e6=a.consensus_score_step_e6,
        languages=parse_languages(a.languages or "en"),
    )


def main() -> None:
    """Runs the classify model server (HTTP, or an MQTT worker with `--mqtt`)."""
    parser = base_parser("Infera text classifier: zero-shot over MiniLM embeddings, or a classification checkpoint.")
    parser.add_argument("--name", default=None, help="model name (default: classify/minilm-sentiment@1)")
    parser.add_argument("--checkpoint", default=None, help="sequence-classification checkpoint (path or name)")
    parser.add_argument("--model-path", default=None, help="zero-shot: embedding model folder (default: MiniLM)")
    parser.add_argument("--labels", default=None, help='zero-shot: JSON file {"label": ["description", ...]}')
    parser.add_argument("--temperature", type=float, default=0.05, help="zero-shot: softmax temperature")
    parser.add_argument(
        "--consensus-score-step-e6",
        type=int,
        default=DEFAULT_CONSENSUS_SCORE_STEP_E6,
        help="consensus answers: score rounded down to a multiple of this (millionths); 0 (default) zeroes it",
    )
    add_languages_option(parser, "zero-shot MiniLM: en; a checkpoint: any")
    serve(parser, build)


if __name__ == "__main__":
    main()

"""Input limits on-chain: each case is asked through the example SentimentConsumer on a real anvil, served by the real
node and the packaged-MiniLM classifier, and ends as documented: a label in `_onInferenceResult`, or the refusal's
reason in `_onInferenceError` (the node reports a container's 400 with `reportFailure`, once, and keeps serving)."""

from __future__ import annotations

import pytest

from node.devnet import wait_until
from tests.e2e.conftest import System
from tests.integration.test_input_limits import CHINESE, CUT_TEXT, GERMAN, OVER_LIMIT, RUSSIAN

pytestmark = pytest.mark.e2e

#: (text, the label it gets, or words of the reason its error callback gets)
CASES: list[tuple[str, str]] = [
    ("good " * 254, "positive"),  # exactly 256 tokens: read whole
    (OVER_LIMIT, "text is 257 tokens; this model reads at most 256"),
    (CUT_TEXT, "this model reads at most 256"),  # the report: no longer "positive 0.98"
    ("\x00", "text has no visible characters (only control characters such as NUL"),
    ("\x01\x02\x1b\x7f", "text has no visible characters"),
    ("   ", "text must be a non-empty string"),
    ("😀🎉👍", "text has nothing this model can read: its 1 token(s) are unknown to it (emoji, symbols,"),
    (GERMAN, "text looks like German (de, p=1.00); this model reads only English (en)"),
    (CHINESE, "text is written mostly in CJK script, not Latin; this model reads only English (en)"),
    (RUSSIAN, "text is written mostly in Cyrillic script, not Latin; this model reads only English (en)"),
    ("ok", "positive"),
    ("great!", "positive"),
    ("I love it 😍🎉 best day ever", "positive"),
    ("this is awful 😡 I hate it", "negative"),
]
LABELS = ("positive", "negative")


def test_each_input_limit_case_ends_on_chain_as_documented(system: System) -> None:
    dev = system.dev
    dep = dev.deployment
    assert dep is not None
    nonce_before = dev.w3.eth.get_transaction_count(dev.node_account.address)
    ids = [dev.ask_sentiment(text) for text, _ in CASES]

    def settled() -> list[tuple[str, bool, bool]] | None:
        states = [dep.consumer.functions.sentiments(i).call() for i in ids]
        done = [(str(label), bool(answered), bool(failed)) for _text, label, _score, answered, failed in states]
        return done if all(answered or failed for _, answered, failed in done) else None

    outcomes = wait_until(settled, timeout_s=120, what="every case answered or failed", alive=system.node.check_alive)
    failures = {
        int(e["args"]["requestId"]): str(e["args"]["reason"])
        for e in dep.consumer.events.SentimentFailed().get_logs(from_block=dep.start_block)
    }
    for (text, expected), rid, (label, answered, failed) in zip(CASES, ids, outcomes, strict=True):
        if expected in LABELS:
            assert answered, (text[:40], failures.get(rid))
            assert not failed
            assert label == expected, text[:40]
        else:
            assert failed, (text[:40], label)
            assert not answered
            assert expected in failures[rid], (text[:40], failures[rid])
            assert failures[rid].startswith("container rejected the input: ")
            assert dev.request_state(rid)["failures"] == 1  # reported once: a 400 is not retried
    # One transaction per outcome at most (deliveries and reports ready together share a batch): nothing resent.
    assert dev.w3.eth.get_transaction_count(dev.node_account.address) - nonce_before <= len(CASES)
    system.node.check_alive()

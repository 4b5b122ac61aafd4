"""The quality gate's numbers and messages, and the verification set it runs on."""

from __future__ import annotations

import numpy as np
import pytest

from exporter.verification_set import verification_sentences
from exporter.verify import GateError, cosines, gate_statistic, run_gate


def _identity_encoder(vectors: dict[str, np.ndarray]):
    """A runtime stand-in that returns a fixed vector per sentence (keyed by its first token id)."""
    def encoder(feeds):
        return np.stack([vectors[int(row[1])] for row in feeds["input_ids"]])
    return encoder


def test_cosines_are_row_wise_and_scale_free():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    b = np.array([[5.0, 0.0], [0.0, -1.0], [4.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(cosines(a, b), [1.0, -1.0, 24 / 25], rtol=1e-12)


def test_verification_set_covers_lengths_scripts_and_code():
    from transformers import AutoTokenizer

    from export_helpers import bundled_dir

    sentences = verification_sentences()
    assert 250 <= len(sentences) <= 400 and len(set(sentences)) == len(sentences)
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(str(bundled_dir()))(sentences)["input_ids"]]
    assert min(lengths) == 3  # [CLS] one-token [SEP]
    assert sum(n > 256 for n in lengths) >= 3  # beyond max_seq_length: truncation is gated too
    text = "\n".join(sentences)
    for sample in ("東京", "사랑", "мир", "🙂", "def add(a, b)", "SELECT", "مرحبا"):
        assert sample in text


def test_limited_set_is_a_spread_and_bad_limits_fail():
    subset = verification_sentences(40)
    everything = verification_sentences()
    assert len(subset) == 40 and subset[0] == everything[0] and set(subset) < set(everything)
    assert any(len(s) > 1000 for s in subset)  # a long input is still in
    assert verification_sentences(10_000) == everything
    with pytest.raises(ValueError, match="verification_limit=0 must be a positive integer"):
        verification_sentences(0)


def test_gate_statistics_per_precision():
    assert gate_statistic("int4") == "mean_cosine"
    assert {gate_statistic(p) for p in ("fp32", "fp16", "bf16", "int8")} == {"min_cosine"}


@pytest.fixture(scope="module")
def gate_inputs():
    from export_helpers import bundled_dir

    sentences = ["alpha", "beta", "gamma", "delta"]
    tokenizer_dir = bundled_dir()
    from transformers import AutoTokenizer

    ids = [AutoTokenizer.from_pretrained(str(tokenizer_dir))(s)["input_ids"][1] for s in sentences]
    reference = np.eye(4, dtype=np.float32)
    noisy = reference.copy()
    noisy[2] = [0.0, 0.0, 1.0, 0.5]  # "gamma" is off: cosine 1/sqrt(1.25) = 0.894
    return sentences, tokenizer_dir, reference, _identity_encoder(dict(zip(ids, noisy)))


def test_gate_failure_lists_worst_sentences(gate_inputs):
    sentences, tokenizer_dir, reference, encoder = gate_inputs
    with pytest.raises(GateError) as info:
        run_gate(encoder, tokenizer_dir, reference, sentences, 16, 0.99, label="demo (int8)")
    message = str(info.value)
    assert message.startswith("quality gate failed for demo (int8): min cosine 0.894427 < threshold 0.99 over 4 "
                              "sentences (min 0.894427, mean 0.973607")
    assert "worst sentences:\n  0.894427  'gamma'" in message and "--accept-degraded" in message
    assert info.value.gate.worst[0] == {"cosine": 0.894427, "text": "gamma"}


def test_gate_mean_statistic_and_accept_degraded(gate_inputs):
    sentences, tokenizer_dir, reference, encoder = gate_inputs
    passed = run_gate(encoder, tokenizer_dir, reference, sentences, 16, 0.96, statistic="mean_cosine")
    assert passed.passed and passed.statistic == "mean_cosine" and passed.min_cosine < 0.96
    kept = run_gate(encoder, tokenizer_dir, reference, sentences, 16, 0.99, accept_degraded=True)
    assert (kept.passed, kept.accepted_degraded, kept.sentences) == (False, True, 4)
    with pytest.raises(ValueError, match="gate statistic 'median' is not one of min_cosine, mean_cosine, p1"):
        run_gate(encoder, tokenizer_dir, reference, sentences, 16, 0.9, statistic="median")


def test_gate_p1_floor_fails_a_build_whose_mean_passes_and_names_both(gate_inputs):
    sentences, tokenizer_dir, reference, encoder = gate_inputs
    with pytest.raises(GateError) as info:
        run_gate(encoder, tokenizer_dir, reference, sentences, 16, 0.96, statistic="mean_cosine", p1_floor=0.9,
                 label="demo (int4)")
    assert str(info.value).startswith("quality gate failed for demo (int4): mean cosine 0.973607 >= threshold "
                                      "0.96, p1 0.897594 < threshold 0.9 over 4 sentences")
    assert "PRECISION:p1=VALUE" in str(info.value)
    gate = info.value.gate
    assert (gate.passed, gate.p1_threshold, gate.threshold, round(gate.p1, 6)) == (False, 0.9, 0.96, 0.897594)
    passed = run_gate(encoder, tokenizer_dir, reference, sentences, 16, 0.96, statistic="mean_cosine",
                      p1_floor=0.89)
    assert passed.passed and passed.to_dict()["p1_threshold"] == 0.89


def test_int4_is_gated_on_its_mean_and_its_first_percentile():
    from exporter.options import ExportOptions
    from exporter.precisions import get

    int4 = get("int4")
    assert int4.gate_statistic == "mean_cosine" and int4.gate_p1 is not None
    assert ExportOptions().p1_floor("int4") == int4.gate_p1 and ExportOptions().p1_floor("int8") is None
    assert ExportOptions(thresholds={"int4:p1": 0.5, "int4": 0.9}).p1_floor("int4") == 0.5

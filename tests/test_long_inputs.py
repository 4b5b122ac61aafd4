"""Long inputs: a model with an 8192-position table embeds an 8192-token text whole (not cut at 512), through the
served tokenizer and encoder python models (fake pb_utils, the real ONNX artefact), equal to sentence-transformers,
and the encoder's length buckets keep one long text from padding the whole batch to its length."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from exporter.artefact import export_artefact
from exporter.options import ExportOptions
from exporter.triton.config import ServingOptions
from exporter.verify import cosines

from export_helpers import bundled_dir, plan_for, tiny_st_model
from fakes import pb_utils
from fakes.python_models import load_python_model
from test_python_models import args, params

# one token per word: > 8192 tokens in 47,600 bytes (under the default --max-text-bytes); the first 512 tokens are
# all "alpha", so a text cut at 512 would get a very different vector
LONG = "alpha " * 600 + "omega zulu " * 4000
SHORT = ["A man is playing a guitar.", "Short.", "A woman is slicing an onion with a sharp knife.", "é ü 漢字"]
TOKENS = ["input_ids", "attention_mask", "token_type_ids"]


def test_a_long_context_model_is_gated_on_an_input_longer_than_it_takes():
    from transformers import AutoTokenizer

    from exporter.verification_set import verification_sentences

    assert verification_sentences(16, max_seq_length=512) == verification_sentences(16)
    *short, long = verification_sentences(16, max_seq_length=8192)
    assert len(short) == 16
    assert len(AutoTokenizer.from_pretrained(str(bundled_dir()))(long)["input_ids"]) > 8192


@pytest.fixture(scope="module")
def long_model(tmp_path_factory) -> Path:
    return tiny_st_model(tmp_path_factory.mktemp("long"), max_positions=8192, max_seq_length=8192, heads=1)


@pytest.fixture(scope="module")
def long_artefact(long_model, tmp_path_factory):
    plan = plan_for("fp32", name="long", model=str(long_model), device="cpu")
    return export_artefact(plan, long_model, tmp_path_factory.mktemp("out"), ExportOptions(verification_limit=16))


def python_model(name: str, version_dir: Path, config: dict):
    model = load_python_model(name).TritonPythonModel()
    model.initialize(args(version_dir.parent, config))
    return model


def served(artefact, tmp_path: Path, texts: list[str], budget: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``texts`` as one request through tokenizer_model.py and encoder_model.py (ONNX runtime, ``budget`` tokens
    per call); returns the vectors and the shape of every runtime call."""
    inputs = artefact.report["inputs"]
    tokenizer_dir = tmp_path / "t" / "1"
    shutil.copytree(artefact.path / "tokenizer", tokenizer_dir / "tokenizer")
    defaults = ServingOptions()
    tokenizer = python_model("tokenizer_model", tokenizer_dir, {
        "name": "t", "max_batch_size": 64, "output": [{"name": n} for n in inputs],
        "parameters": params(max_seq_length=artefact.report["max_seq_length"], max_texts_per_request=64,
                             max_text_bytes=defaults.max_text_bytes)})
    encoder_dir = tmp_path / "e" / "1"
    encoder_dir.mkdir(parents=True)
    (encoder_dir / "model.onnx").symlink_to(artefact.path / "model.onnx")
    shutil.copy(Path(__file__).parents[1] / "exporter/triton/runtime/onnx_encoder.py", encoder_dir)
    encoder = python_model("encoder_model", encoder_dir, {
        "name": "e", "max_batch_size": 64, "input": [{"name": n} for n in inputs],
        "parameters": params(runtime_loader="onnx_encoder.py", runtime_class="OnnxEncoder", threads=0,
                             max_batch_tokens=budget)})
    assert encoder.max_batch_tokens == budget  # the config parameter, not a constant
    text = np.array([[t.encode()] for t in texts], dtype=object)
    (tokens,) = tokenizer.execute([pb_utils.request(TEXT=text)])
    assert not tokens.has_error(), tokens.error().message()
    feeds = {t.name(): t.as_numpy() for t in tokens.output_tensors()}
    calls, run = [], encoder.encoder

    def recording(batch):
        calls.append(batch[inputs[0]].shape)
        return run(batch)

    encoder.encoder = recording
    (response,) = encoder.execute([pb_utils.request(**feeds)])
    assert not response.has_error(), response.error().message()
    return response.output_tensors()[0].as_numpy(), calls


@pytest.mark.slow  # minutes on a 2-core CPU: 8192 x 8192 attention, in ONNX Runtime and in the torch reference
def test_an_8192_token_text_is_embedded_whole_and_equals_sentence_transformers(long_model, long_artefact, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    assert long_artefact.report["max_seq_length"] == 8192
    assert long_artefact.report["gate"]["sentences"] == 17  # 16 + one input past 8192 tokens: the whole table
    texts = [LONG, *SHORT * 4]
    ids = AutoTokenizer.from_pretrained(str(long_model))(LONG)["input_ids"]
    # longer than the model (so truncated, at 8192 and not 512) and within the default byte limit
    assert len(ids) > 8192 and len(LONG.encode()) <= ServingOptions().max_text_bytes
    reference = SentenceTransformer(str(long_model), device="cpu")
    assert reference.max_seq_length == 8192
    vectors, calls = served(long_artefact, tmp_path, texts, budget=4096)
    assert cosines(vectors, reference.encode(texts, convert_to_numpy=True)).min() >= 0.9999
    # a 512-token cut would change the long text's vector: the reference at 512 is far from what was served
    reference.max_seq_length = 512
    assert cosines(vectors[:1], reference.encode(texts[:1], convert_to_numpy=True))[0] < 0.999
    # memory: the long text runs alone; no call pads the short texts to its length
    assert (1, 8192) in calls and all(rows * width <= 8192 for rows, width in calls), calls
    assert sum(rows for rows, _ in calls) == len(texts)

"""Torch routes (int4 bitsandbytes NF4, bf16) on the bundled model: gate, sizes, safetensors-only artefact, and
the self-contained runtime loader reproducing sentence-transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from exporter.precisions import get
from exporter.triton.runtime.torch_encoder import INPUT_SCALE_SUFFIX, TorchEncoder
from exporter.verify import cosines, encode

from export_helpers import bundled_dir

pytestmark = pytest.mark.slow
MAX_SIZE_RATIO = {"int4": 0.20, "bf16": 0.51}


@pytest.fixture(scope="module")
def artefacts(bundled_artefact):
    """The session's shared artefacts (tests/conftest.py ARTEFACTS), exported once: int4 on a CPU target, gated on
    64 sentences, is the served repository's; bf16 (GPU target) on a spread subset of 32."""
    return {p: bundled_artefact(p) for p in MAX_SIZE_RATIO}


@pytest.mark.parametrize("precision", list(MAX_SIZE_RATIO))
def test_gate_size_and_layout(artefacts, precision):
    path, report = artefacts[precision].path, artefacts[precision].report
    assert report["runtime"] == "torch" and report["route"] == {"int4": "torch-bnb-nf4", "bf16": "torch-bf16"}[
        precision]
    gate = report["gate"]
    assert gate["passed"] and gate["threshold"] == {"int4": 0.96, "bf16": 0.999}[precision]
    assert gate["statistic"] == {"int4": "mean_cosine", "bf16": "min_cosine"}[precision]
    assert gate["p1_threshold"] == {"int4": get("int4").gate_p1, "bf16": None}[precision]
    assert report["size_ratio_vs_fp32"] <= MAX_SIZE_RATIO[precision]
    names = sorted(p.name for p in path.iterdir())
    assert names == ["encoder.json", "model.safetensors", "report.json", "tokenizer"]
    assert not [p for p in path.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]  # never pickle
    meta = json.loads((path / "encoder.json").read_text())
    assert meta["pooling"] == ["mean"] and meta["normalize"] is True and meta["dim"] == 384
    assert meta["inputs"] == report["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]


def test_int4_stores_nf4_linears_and_int8_embeddings(artefacts):
    from safetensors import safe_open

    with safe_open(str(artefacts["int4"].path / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
        table = fh.get_tensor("transformer.embeddings.word_embeddings.weight.int8")
    assert sum(k.endswith(".quant_state.bitsandbytes__nf4") for k in keys) == 6 * 6 + 1  # 6 layers x 6 + pooler
    assert str(table.dtype) == "torch.int8" and tuple(table.shape) == (30522, 384)


def test_int4_word_embedding_table_stays_int8_in_memory(artefacts):
    """The loader keeps the table int8 (a quarter of fp32) and looks rows up as the whole dequantized table would."""
    import torch
    from safetensors.torch import load_file

    from exporter.triton.runtime.torch_encoder import Int8Embedding

    encoder = TorchEncoder(str(artefacts["int4"].path))
    table = encoder.module.transformer.embeddings.word_embeddings
    assert isinstance(table, Int8Embedding) and table.int8.dtype == torch.int8
    saved = load_file(str(artefacts["int4"].path / "model.safetensors"))
    key = "transformer.embeddings.word_embeddings.weight"
    whole = saved[key + ".int8"].float() * saved[key + ".scale"].float().unsqueeze(-1)
    ids = torch.tensor([[101, 7592, 2088, 102], [0, 1, 30521, 29999]])
    assert torch.equal(table(ids), whole[ids])


@pytest.mark.parametrize("precision", list(MAX_SIZE_RATIO))
def test_runtime_loader_matches_sentence_transformers(artefacts, precision):
    import bitsandbytes as bnb
    from sentence_transformers import SentenceTransformer

    sentences = ["A man is playing a guitar on the street corner.", "Le chat dort sur le canapé.",
                 "SELECT name FROM users;", "word " * 300]
    encoder = TorchEncoder(str(artefacts[precision].path))
    if precision == "int4":
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in encoder.module.modules())
    got = encode(encoder, artefacts[precision].path / "tokenizer", sentences, 256)
    reference = SentenceTransformer(str(bundled_dir()), device="cpu").encode(sentences)
    assert got.dtype == np.float32 and got.shape == (4, 384)
    cos = cosines(got, reference)
    assert cos.mean() >= {"int4": 0.96, "bf16": 0.999}[precision], cos


def test_bf16_loader_does_not_need_bitsandbytes(artefacts, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a GPU image without bitsandbytes
    encoder = TorchEncoder(str(artefacts["bf16"].path))
    assert str(next(encoder.module.parameters()).dtype) == "torch.bfloat16"


def test_int4_input_scales_are_applied_in_front_of_their_layers(artefacts, tmp_path):
    """The activation-aware scales: most layers got one (alpha > 0), and the runtime applies them — the same
    artefact without them is much further from the fp32 vectors."""
    import shutil

    from safetensors.torch import load_file, save_file

    path = artefacts["int4"].path
    alphas = artefacts["int4"].report["route_details"]["int4"]["alpha_per_layer"]
    tensors = load_file(str(path / "model.safetensors"))
    scaled = {k[: -len(INPUT_SCALE_SUFFIX)] for k in tensors if k.endswith(INPUT_SCALE_SUFFIX)}
    assert scaled == {name for name, alpha in alphas.items() if alpha} and len(scaled) >= 18, alphas
    copy = shutil.copytree(path, tmp_path / "int4", copy_function=shutil.copy)
    save_file({k: v for k, v in tensors.items() if not k.endswith(INPUT_SCALE_SUFFIX)},
              str(copy / "model.safetensors"))
    sentences = ["hi", "A man is playing a guitar.", "Le chat dort sur le canapé.", "SELECT name FROM users;"]
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(bundled_dir()), device="cpu").encode(sentences)
    with_scales = cosines(encode(TorchEncoder(str(path)), path / "tokenizer", sentences, 256), reference)
    without = cosines(encode(TorchEncoder(str(copy)), path / "tokenizer", sentences, 256), reference)
    assert with_scales.mean() > 0.95 and without.mean() < with_scales.mean() - 0.05, (with_scales, without)


def test_int4_activation_aware_build_on_a_tiny_model(tmp_path):
    """The recipe end to end on a random 2-layer model with a Dense layer: every transformer linear gets its
    calibration inputs (the pooler's too, whose input is not per token) and a scale unless plain NF4 was best, and
    the artefact loads in the served runtime and returns float32 vectors near the fp32 ones."""
    import torch
    from safetensors.torch import load_file

    from exporter.export import load_encoder, read_encoder_spec
    from exporter.precisions import int4
    from exporter.precisions.base import BuildJob

    from export_helpers import tiny_st_model

    spec = read_encoder_spec(tiny_st_model(tmp_path, dense=True))
    work = tmp_path / "int4"
    work.mkdir()
    result = int4.build(BuildJob(plan=None, spec=spec), work)
    alphas = result.details["int4"]["alpha_per_layer"]
    assert len(alphas) == 2 * 6 + 1 and "transformer.pooler.dense" in alphas  # 2 layers x 6 linears + pooler
    scaled = {k[: -len(INPUT_SCALE_SUFFIX)] for k in load_file(str(work / "model.safetensors"))
              if k.endswith(INPUT_SCALE_SUFFIX)}
    assert scaled == {name for name, alpha in alphas.items() if alpha}
    sentences = ["hi", "A man is playing a guitar on the street corner.", "SELECT name FROM users;"]
    got = encode(TorchEncoder(str(work)), spec.transformer_dir, sentences, 64)
    fp32 = load_encoder(spec, attn_implementation=None)

    def reference(feeds):
        with torch.inference_mode():
            return fp32(*[torch.as_tensor(feeds[n]) for n in fp32.input_names]).numpy()

    assert got.dtype == np.float32 and got.shape == (3, 32)
    assert cosines(got, encode(reference, spec.transformer_dir, sentences, 64)).min() > 0.9


def test_int4_of_a_bf16_stored_decoder_computes_in_bf16_on_a_bf16_gpu(tmp_path):
    """The plan's native dtype reaches the artefact: a Qwen3 stored in bf16, built for an H100-class target, records
    bf16 GPU compute (its activations may exceed fp16's range); it still serves on CPU in fp32, table int8."""
    from bench import tiny_families
    from exporter.config import Config
    from exporter.devices import parse_device
    from exporter.export import read_encoder_spec
    from exporter.models import ModelSpec
    from exporter.plan import resolve_as
    from exporter.precisions.base import BuildJob
    from exporter.triton.runtime.torch_encoder import Int8Embedding

    st = tiny_families.qwen3(tmp_path / "qwen3")
    config_path = tmp_path / "qwen3" / "hf" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "torch_dtype": "bfloat16"}))
    plan = resolve_as(ModelSpec(str(st), "qwen3"), Config.from_env({}), parse_device("cuda:9.0"), "int4",
                      "bfloat16", by="test")
    work = tmp_path / "int4"
    work.mkdir()
    get("int4").build(BuildJob(plan, read_encoder_spec(st)), work)
    assert json.loads((work / "encoder.json").read_text())["compute_dtype"] == {"cpu": "float32",
                                                                               "cuda": "bfloat16"}
    encoder = TorchEncoder(str(work))
    assert isinstance(encoder.module.transformer.get_input_embeddings(), Int8Embedding)
    ids = np.array([[5, 6, 7, 0], [8, 9, 10, 11]])
    vectors = encoder({"input_ids": ids, "attention_mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1]])[:, ::-1].copy()})
    assert vectors.shape == (2, 64) and np.isfinite(vectors).all()

"""Every architecture family (bench/tiny_families.py: tiny random models with their own tokenizers) exports at every
precision and passes the gate against sentence-transformers on the same weights; the pooling modes, Dense
activations and Normalize (or none) of sentence-transformers give its exact vectors; the server-side tokenizer pads
on the model's side and the encoder model's cross-request batching keeps left-padded rows right; a model ONNX export
cannot express is served through the torch route. The served e2e check is tests/e2e/test_families_served.py."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.tiny_families import FAMILIES
from exporter.artefact import ExportError, ExportOptions, export_artefact
from exporter.cli.export import summary_line
from exporter.errors import ModelError
from exporter.export import read_encoder_spec
from exporter.verify import cosines

from export_helpers import plan_for, tiny_st_model

LIMIT = 24
# the issue's targets for served vectors vs sentence-transformers (min cosine); int4's gate is a mean (base.py)
TARGETS = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99, "bf16": 0.999, "int4": 0.96}
UNFUSED = {"modernbert", "qwen3", "gemma3", "t5"}  # model types ORT's transformer optimizer has no usable fusions for


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    made: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in made:
            made[name] = FAMILIES[name](tmp_path_factory.mktemp(name))
        return made[name]

    return build


def st_vectors(model: Path, texts: list[str], batch_size: int = 32) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model), device="cpu")
    return st.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


@pytest.mark.slow
@pytest.mark.parametrize("precision", list(TARGETS))
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_exports_and_passes_the_gate(family, tmp_path, caplog, name, precision):
    with caplog.at_level(logging.WARNING, logger="exporter"):
        artefact = export_artefact(plan_for(precision, f"{name}-{precision}"), family(name), tmp_path,
                                   ExportOptions(verification_limit=LIMIT))
    report = artefact.report
    gate = report["gate"]
    assert gate["passed"] and gate[gate["statistic"]] >= TARGETS[precision], gate
    assert report["dim"] == 64 and report["normalized"] is True and report["route"] == plan_for(precision).route
    if precision == "int4":  # linears bitsandbytes' CPU kernel cannot pack, or transformers keeps in fp32, stay fp16
        kept = report["route_details"]["int4"]["linear_kept_fp16"]
        assert {"gemma3": {"k_proj", "v_proj"}, "t5": {"wo"}}.get(name, set()) == {k.rsplit(".", 1)[-1] for k in kept}
    if report["runtime"] == "onnx" and name in UNFUSED:  # unfused graph, WARNING naming the model type, still gated
        assert report["route_details"]["optimizer"].startswith("none (no usable fusions for model_type")
        assert any("no fusions usable for model_type" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_qwen3_family_is_a_left_padded_last_token_decoder(family):
    spec = read_encoder_spec(family("qwen3"))
    assert spec.pooling == ("lasttoken",) and spec.inputs == ("input_ids", "attention_mask")
    config = json.loads((spec.transformer_dir / "tokenizer_config.json").read_text())
    assert config["padding_side"] == "left"
    gemma = read_encoder_spec(family("gemma3"))
    assert len(gemma.dense) == 2 and gemma.config["use_bidirectional_attention"] is True


POOLINGS = [("weightedmean", [], True), ("mean_sqrt_len_tokens", [], True), (("cls", "mean", "max"), [], False),
            ("mean", [(48, "GELU"), (40, "SiLU"), (24, "Identity")], False), ("lasttoken", [(32, "Tanh")], True)]


@pytest.mark.slow
@pytest.mark.parametrize("pooling,dense,normalize", POOLINGS, ids=lambda v: str(v).replace(" ", ""))
def test_pooling_dense_and_normalize_give_sentence_transformers_vectors(tmp_path, pooling, dense, normalize):
    """Exact vectors (not only their direction): without Normalize the lengths must match too."""
    import torch

    from exporter.triton.runtime.onnx_encoder import OnnxEncoder
    from exporter.verification_set import verification_sentences
    from exporter.verify import encode

    model = tiny_st_model(tmp_path, pooling=pooling, normalize=normalize,
                          dense=[(n, getattr(torch.nn, act)()) for n, act in dense])
    artefact = export_artefact(plan_for("fp32", "pool"), model, tmp_path / "out",
                               ExportOptions(verification_limit=LIMIT))
    report = artefact.report
    modes = [pooling] if isinstance(pooling, str) else list(pooling)
    assert report["pooling"] == [m.replace("_tokens", "") for m in modes]
    assert report["normalized"] is normalize and report["dense_layers"] == len(dense)
    assert report["dim"] == (dense[-1][0] if dense else 64 * len(modes))
    texts = verification_sentences(LIMIT)
    got = encode(OnnxEncoder(str(artefact.path)), artefact.path / "tokenizer", texts, 64)
    want = st_vectors(model, texts)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1, atol=1e-5) is normalize


def test_dense_activation_outside_torch_nn_is_refused_naming_the_module(tmp_path):
    model = tiny_st_model(tmp_path, dense=True)
    dense_config = next(model.glob("*Dense/config.json"))
    config = json.loads(dense_config.read_text())
    config["activation_function"] = "os.system"
    dense_config.write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"Dense.*config.json: Dense activation 'os.system' is not a torch.nn"):
        read_encoder_spec(model)


def test_any_torch_nn_activation_is_accepted_by_its_path():
    from torch import nn

    from exporter.triton.runtime.torch_encoder import activation

    assert isinstance(activation("torch.nn.modules.activation.SiLU"), nn.SiLU)
    assert isinstance(activation("torch.nn.GELU"), nn.GELU) and isinstance(activation(None), nn.Identity)
    for bad in ("torch.nn.modules.activation.Nope", "torch.nn.functional.relu", "builtins.eval"):
        with pytest.raises(ValueError, match="is not a torch.nn module class"):
            activation(bad)


def test_pooling_modes_follow_sentence_transformers_on_left_padding():
    """cls takes the first real token and lasttoken the last one, whichever side the padding is on."""
    import torch
    from sentence_transformers.models import Pooling

    from exporter.triton.runtime.torch_encoder import pool

    tokens = torch.randn(3, 6, 8)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]])
    for mode, ours in (("cls", "cls"), ("lasttoken", "lasttoken"), ("mean", "mean"), ("max", "max"),
                       ("weightedmean", "weightedmean"), ("mean_sqrt_len_tokens", "mean_sqrt_len")):
        want = Pooling(8, pooling_mode=mode)({"token_embeddings": tokens, "attention_mask": mask})
        torch.testing.assert_close(pool(tokens, mask, ours), want["sentence_embedding"], msg=mode)


# -- the server-side models on a left-padded decoder ------------------------------------------------------------------

@pytest.mark.slow
def test_left_padded_requests_batched_across_requests_keep_sentence_transformers_vectors(family, tmp_path):
    """tokenizer_model pads on the side tokenizer_config.json names (left, EOS appended by the post-processor);
    encoder_model pools rows of several requests into length buckets: each text's vector is still the
    sentence-transformers one."""
    from fakes import pb_utils
    from fakes.python_models import load_python_model
    from test_python_models import args, params, text_array

    model = family("qwen3")
    artefact = export_artefact(plan_for("fp32", "q"), model, tmp_path / "out", ExportOptions(verification_limit=8))
    tok_repo, enc_repo = tmp_path / "q_tokenizer", tmp_path / "q_encoder"
    shutil.copytree(artefact.path / "tokenizer", tok_repo / "1" / "tokenizer")
    shutil.copytree(artefact.path, enc_repo / "1", ignore=shutil.ignore_patterns("tokenizer"))
    shutil.copy(Path("exporter/triton/runtime/onnx_encoder.py"), enc_repo / "1" / "onnx_encoder.py")
    names = ["input_ids", "attention_mask"]
    tokenizer = load_python_model("tokenizer_model").TritonPythonModel()
    tokenizer.initialize(args(tok_repo, {
        "name": "q_tokenizer", "max_batch_size": 8, "parameters": params(max_seq_length=64),
        "output": [{"name": n} for n in names]}))
    encoder = load_python_model("encoder_model").TritonPythonModel()
    encoder.initialize(args(enc_repo, {
        "name": "q_encoder", "max_batch_size": 8, "input": [{"name": n} for n in names],
        "parameters": params(runtime_loader="onnx_encoder.py", runtime_class="OnnxEncoder")}))
    encoder.max_batch_tokens = 40  # several buckets
    requests = [["a short one", "and a considerably longer sentence than the first one of them"],
                ["x"], ["medium length text here", "two words", "the third text of the third request"]]
    token_responses = tokenizer.execute([pb_utils.request(TEXT=text_array(*texts)) for texts in requests])
    first = token_responses[0].output_tensors()
    mask = next(t.as_numpy() for t in first if t.name() == "attention_mask")
    ids = next(t.as_numpy() for t in first if t.name() == "input_ids")
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # the short text is padded on the left
    assert ids[0, -1] == ids[1, -1] == 0  # <|endoftext|> (id 0) appended to both
    feeds = [pb_utils.request(**{t.name(): t.as_numpy() for t in r.output_tensors()}) for r in token_responses]
    got = np.concatenate([r.output_tensors()[0].as_numpy() for r in encoder.execute(feeds)])
    want = st_vectors(model, [t for texts in requests for t in texts], batch_size=2)
    assert cosines(got, want).min() >= 0.9999


# -- torch fallback ---------------------------------------------------------------------------------------------------

@pytest.fixture
def onnx_export_fails(monkeypatch):
    """torch.onnx.export raising as it does for an operator it cannot express (the model itself is real)."""
    import torch

    def refuse(*_args, **_kwargs):
        raise torch.onnx.errors.UnsupportedOperatorError("aten::fft_fftn", 17, "not supported in opset 17")

    monkeypatch.setattr(torch.onnx, "export", refuse)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_model_onnx_cannot_express_is_served_through_the_torch_route(family, tmp_path, caplog, onnx_export_fails,
                                                                     precision):
    with caplog.at_level(logging.WARNING, logger="exporter"):
        artefact = export_artefact(plan_for(precision, "fb"), family("bert"), tmp_path,
                                   ExportOptions(verification_limit=LIMIT))
    report = artefact.report
    assert (report["runtime"], report["route"]) == ("torch", f"torch-{precision}")
    assert report["plan"]["route"] == f"onnx-{precision}" and report["gate"]["passed"]
    assert report["gate"]["min_cosine"] >= TARGETS[precision]
    fallback = report["route_details"]["fallback"]
    assert fallback["from"] == f"onnx-{precision}" and "aten::fft_fftn" in fallback["reason"]
    assert "model_type 'bert'" in fallback["reason"]
    assert (artefact.path / "encoder.json").is_file() and not (artefact.path / "model.onnx").exists()
    assert any("serving " + precision + " through the torch route" in r.getMessage() for r in caplog.records)
    assert "[ONNX export failed, torch fallback: " in summary_line(report, artefact.path)


@pytest.mark.slow
def test_int8_of_a_model_onnx_cannot_express_is_refused_naming_the_alternatives(family, tmp_path,
                                                                                onnx_export_fails):
    with pytest.raises(ExportError, match=r"cannot be exported to ONNX.*int8 needs the ONNX graph.*fp32, fp16"):
        export_artefact(plan_for("int8", "fb8"), family("bert"), tmp_path, ExportOptions(verification_limit=LIMIT))
    assert not (tmp_path / "fb8").exists()



def test_unknown_architecture_is_a_model_error_naming_the_model_type(tmp_path):
    model = tiny_st_model(tmp_path)
    config_file = model / "config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"model_type": "nosuchmodel"}))
    with pytest.raises(ModelError, match=r"config.json: model_type 'nosuchmodel' is not an architecture transformers"):
        read_encoder_spec(model)


def test_hidden_width_is_read_under_the_family_key_or_refused_naming_the_model_type():
    from exporter.export import hidden_width

    configs = ({"hidden_size": 8}, {"dim": 16}, {"d_model": 32}, {"n_embd": 4})
    assert [hidden_width(c) for c in configs] == [8, 16, 32, 4]
    with pytest.raises(ModelError, match=r"model_type 'oddnet' names its hidden width under none of hidden_size"):
        hidden_width({"model_type": "oddnet", "width": 8})


@pytest.mark.parametrize("padding,truncation", [("left", "right"), ("right", "left")])
def test_tokenizer_model_pads_and_truncates_on_the_sides_tokenizer_config_names(tmp_path, padding, truncation):
    from export_helpers import bundled_dir
    from fakes import pb_utils
    from test_python_models import make_tokenizer, text_array

    tokenizer_dir = tmp_path / "1" / "tokenizer"
    tokenizer_dir.mkdir(parents=True)
    shutil.copy(bundled_dir() / "tokenizer.json", tokenizer_dir)
    config = json.loads((bundled_dir() / "tokenizer_config.json").read_text())
    config.update(padding_side=padding, truncation_side=truncation)
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(config))
    model = make_tokenizer(tmp_path, max_seq_length=6)
    (response,) = model.execute([pb_utils.request(TEXT=text_array("hi", "one two three four five six seven"))])
    ids, mask = (next(t.as_numpy() for t in response.output_tensors() if t.name() == n)
                 for n in ("input_ids", "attention_mask"))
    assert mask[0].tolist() == ([0, 0, 0, 1, 1, 1] if padding == "left" else [1, 1, 1, 0, 0, 0])
    cls, sep = 101, 102
    long_row = ids[1].tolist()
    assert long_row[0] == cls and long_row[-1] == sep and len(long_row) == 6
    kept = [model.tokenizer.id_to_token(i) for i in long_row[1:-1]]
    assert kept == (["one", "two", "three", "four"] if truncation == "right" else ["four", "five", "six", "seven"])


def test_tokenizer_model_refuses_an_unknown_padding_side(tmp_path):
    from export_helpers import bundled_dir
    from test_python_models import make_tokenizer

    tokenizer_dir = tmp_path / "1" / "tokenizer"
    tokenizer_dir.mkdir(parents=True)
    shutil.copy(bundled_dir() / "tokenizer.json", tokenizer_dir)
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({"padding_side": "middle"}))
    with pytest.raises(ValueError, match="padding/truncation side 'middle' is not 'left' or 'right'"):
        make_tokenizer(tmp_path)

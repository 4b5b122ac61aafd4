"""Config generation, Triton-schema validation, ONNX cross-checks and atomic publishing of the repository writer.

A tiny ONNX graph with the artefact contract's signature (int64 [batch, seq] tokens -> float32 [batch, dim]) stands
in for a real export here, so these tests run in seconds; the real artefacts are exercised by tests/e2e.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from exporter.config import Config
from exporter.devices import parse_device
from exporter.errors import ConfigError
from exporter.models import ModelSpec
from exporter.plan import resolve
from exporter.triton.config import (
    ArtefactInfo,
    ServingOptions,
    encoder_config,
    ensemble_config,
    python_runner_config,
    tokenizer_config,
)
from exporter.triton.local_view import make_local_view
from exporter.triton.repository import MANIFEST, README, ModelEntry, assemble, publish, staging, validate_repository
from exporter.triton.schema import SchemaError, model_config_pb2, parse, render

DIM = 8
INPUTS = ("input_ids", "attention_mask")
REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_onnx(path: Path, output: str = "sentence_embedding", batch: str | int = "batch") -> None:
    """ids/mask [batch, seq] -> mean of a [vocab, DIM] embedding lookup -> [batch, DIM]."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [32, DIM], np.random.rand(32 * DIM).tolist())
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
             helper.make_node("ReduceMean", ["emb"], [output], axes=[1], keepdims=0)]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(n, TensorProto.INT64, [batch, "seq"]) for n in INPUTS],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, DIM])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def make_artefact(root: Path, runtime: str = "onnx", **onnx_kwargs) -> Path:
    root.mkdir(parents=True)
    tok = root / "tokenizer"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    if runtime == "onnx":
        tiny_onnx(root / "model.onnx", **onnx_kwargs)
    else:
        (root / "model.safetensors").write_bytes(b"")
        (root / "encoder.json").write_text("{}")
    report = {"name": "tiny", "model": "tiny/model", "precision": "fp32", "route": "onnx-fp32", "runtime": runtime,
              "dim": DIM, "max_seq_length": 128, "inputs": list(INPUTS), "output": "sentence_embedding",
              "files": {"model.onnx": {"bytes": 1, "sha256": "x"}}, "gate": {"passed": True},
              "versions": {"python": "3.11.7", "onnxruntime": "1.32.0"}}
    (root / "report.json").write_text(json.dumps(report))
    return root


def plan_for(device: str = "cpu", name: str = "tiny", **config):
    return resolve(ModelSpec("tiny/model", name), Config.from_env(config), parse_device(device))


INFO = ArtefactInfo(dim=DIM, max_seq_length=128, inputs=INPUTS, runtime="onnx", graph_sha256="0123456789abcdef" * 4)


def roundtrip(config):
    """Render to config.pbtxt text and parse it back against Triton's schema."""
    return parse(render(config))


def test_ensemble_config_is_the_public_contract():
    plan = plan_for()
    config = roundtrip(ensemble_config(plan, INFO, ServingOptions()))
    pb = model_config_pb2()
    assert config.platform == "ensemble" and config.max_batch_size == 64
    assert [(t.name, t.data_type, list(t.dims), t.optional) for t in config.input] == [
        ("TEXT", pb.TYPE_STRING, [1], False), ("PROMPT_NAME", pb.TYPE_STRING, [1], True),
        ("PROMPT", pb.TYPE_STRING, [1], True)]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("EMBEDDING", pb.TYPE_FP32, [DIM]), ("TOKEN_COUNT", pb.TYPE_INT64, [1])]
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tiny_tokenizer", "tiny_encoder"]
    assert dict(steps[0].input_map) == {"TEXT": "TEXT", "PROMPT_NAME": "PROMPT_NAME", "PROMPT": "PROMPT"}
    assert steps[0].output_map["TOKEN_COUNT"] == "TOKEN_COUNT"
    assert dict(steps[1].output_map) == {"sentence_embedding": "EMBEDDING"}
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["precision"] == "fp32" and params["route"] == "onnx-fp32" and params["dim"] == str(DIM)
    assert params["model"] == "tiny/model"
    assert params["normalized"] == "true" and params["prompts"] == "{}"
    assert "default_prompt_name" not in params and "truncate_dim" not in params


def parameters(config) -> dict[str, str]:
    return {k: v.string_value for k, v in roundtrip(config).parameters.items()}


def test_model_prompts_and_models_file_overrides_reach_the_configs_and_the_manifest(tmp_path):
    report = json.loads((make_artefact(tmp_path / "art") / "report.json").read_text())
    report["encoder"] = {"normalize": False, "prompts": {"query": "query: ", "doc": ""}, "default_prompt_name": "query"}
    plan = replace(plan_for(), prompts={"doc": "passage: ", "title": "title: "}, truncate_dim=4)
    info = ArtefactInfo.from_report(report).with_plan(plan)
    assert info.prompts == {"query": "query: ", "doc": "passage: ", "title": "title: "}  # the plan's win, by name
    ensemble, tokenizer = (parameters(make(plan, info, ServingOptions()))
                           for make in (ensemble_config, tokenizer_config))
    assert json.loads(ensemble["prompts"]) == json.loads(tokenizer["prompts"]) == info.prompts
    assert ensemble["default_prompt_name"] == tokenizer["default_prompt_name"] == "query"
    assert (ensemble["normalized"], ensemble["truncate_dim"]) == ("false", "4")
    (tmp_path / "art" / "report.json").write_text(json.dumps(report))
    with staging(tmp_path / "repo") as root:
        (model,) = assemble(root, [ModelEntry(plan, tmp_path / "art")], ServingOptions())["models"]
    assert (model["normalized"], model["prompts"], model["default_prompt_name"], model["truncate_dim"]) == (
        False, info.prompts, "query", 4)


@pytest.mark.parametrize("truncate_dim", [0, DIM + 1])
def test_a_truncate_dim_outside_the_model_dimension_is_refused(tmp_path, truncate_dim):
    info = ArtefactInfo.from_report(json.loads((make_artefact(tmp_path / "art") / "report.json").read_text()))
    with pytest.raises(ConfigError, match=f"truncate_dim={truncate_dim} is out of range; allowed: an integer from 1 "
                                          f"to the model's dimension {DIM}"):
        info.with_plan(replace(plan_for(), truncate_dim=truncate_dim))


def test_cpu_encoder_is_native_onnxruntime_on_cpu_with_batching_and_warmup():
    config = roundtrip(encoder_config(plan_for(), INFO, ServingOptions(queue_delay_us=123), gpu=False))
    pb = model_config_pb2()
    assert config.platform == "onnxruntime_onnx" and not config.backend
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    assert config.dynamic_batching.max_queue_delay_microseconds == 123
    assert [t.name for t in config.input] == list(INPUTS) and all(list(t.dims) == [-1] for t in config.input)
    assert not any(t.allow_ragged_batch for t in config.input)  # the native backend cannot pad ragged batches
    assert set(config.model_warmup[0].inputs) == set(INPUTS)
    assert "arena_extend_strategy" not in config.parameters
    assert config.parameters["memory_optimization"].string_value == "false"


def test_gpu_encoder_gets_kind_gpu_memory_settings_and_optional_tensorrt():
    plan = plan_for("cuda:8.0", EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION="true")
    config = roundtrip(encoder_config(plan, INFO, ServingOptions(tensorrt=True), gpu=True))
    pb = model_config_pb2()
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    assert config.parameters["arena_extend_strategy"].string_value == "1"  # kSameAsRequested
    assert config.parameters["memory_optimization"].string_value == "true"  # the python runner's switch
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in trt] == ["tensorrt"] and trt[0].parameters["precision_mode"] == "FP16"
    # the engine cache lives on the volume docker-compose.yml mounts, not in the container's /tmp
    assert trt[0].parameters["trt_engine_cache_path"] == f"/trt-cache/{plan.name}/{INFO.graph_sha256[:16]}"


def test_tensorrt_engines_of_a_rebuilt_graph_go_to_a_new_cache_directory():
    """TensorRT's own cache key does not cover the weights: a rebuild under the same name must not load the old
    engines. The key is model.onnx's sha256 from report.json."""
    from dataclasses import replace

    plan = plan_for("cuda")

    def cache(info):
        config = encoder_config(plan, info, ServingOptions(tensorrt=True), gpu=True)
        return config.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters[
            "trt_engine_cache_path"]

    assert cache(INFO) != cache(replace(INFO, graph_sha256="f" * 64))
    report = {"dim": DIM, "max_seq_length": 128, "inputs": list(INPUTS), "runtime": "onnx",
              "output": "sentence_embedding", "files": {"model.onnx": {"bytes": 1, "sha256": "9" * 64}}}
    assert ArtefactInfo.from_report(report).graph_sha256 == "9" * 64


def test_tensorrt_on_a_cpu_target_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"--tensorrt needs an NVIDIA GPU target; tiny targets cpu"):
        encoder_config(plan_for(), INFO, ServingOptions(tensorrt=True), gpu=False)


@pytest.mark.parametrize("argv, message", [
    (["--max-batch-size", "0"], "--max-batch-size=0 is out of range; allowed: an integer from 1 to 4096"),
    (["--tensorrt", "--device", "cpu"], "--tensorrt needs an NVIDIA GPU target; all-minilm-l6-v2 targets cpu"),
    (["--verification-limit", "0"], "--verification-limit=0: expected a positive number of sentences"),
    (["--min-cosine", "fp8=0.9"], "--min-cosine 'fp8=0.9': expected PRECISION=VALUE"),
])
def test_build_cli_rejects_bad_options_before_exporting(argv, message, tmp_path, capsys):
    from exporter.cli import main

    assert main(["build", "--repository", str(tmp_path / "repo"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "repo").exists() and not list(tmp_path.iterdir())


def test_torch_encoder_is_a_python_model_with_ragged_inputs():
    info = ArtefactInfo(dim=DIM, max_seq_length=128, inputs=INPUTS, runtime="torch")
    config = roundtrip(encoder_config(plan_for(), info, ServingOptions(), gpu=False))
    assert config.backend == "python" and not config.platform
    assert all(t.allow_ragged_batch for t in config.input)
    assert config.parameters["runtime_loader"].string_value == "torch_encoder.py"


def test_tokenizer_config_carries_limits():
    options = ServingOptions(max_batch_size=32, max_texts_per_request=16, max_text_bytes=1000)
    config = roundtrip(tokenizer_config(plan_for(), INFO, options))
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert config.backend == "python" and config.max_batch_size == 32
    assert params == {"max_seq_length": "128", "tokenizer_dir": "tokenizer", "max_texts_per_request": "16",
                      "max_text_bytes": "1000", "prompts": "{}"}
    assert [t.name for t in config.output] == [*INPUTS, "TOKEN_COUNT"]
    assert [(t.name, t.optional) for t in config.input] == [("TEXT", False), ("PROMPT_NAME", True), ("PROMPT", True)]


@pytest.mark.parametrize("kwargs, flag", [
    ({"max_batch_size": 0}, "--max-batch-size=0"),
    ({"queue_delay_us": -1}, "--queue-delay-us=-1"),
    ({"max_batch_size": 8, "max_texts_per_request": 9}, "--max-texts-per-request=9"),
    ({"max_text_bytes": 0}, "--max-text-bytes=0"),
])
def test_serving_options_reject_bad_values_naming_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag.replace("-", r"\-") + r" is out of range; allowed"):
        ServingOptions(**kwargs)


def test_schema_rejects_a_misspelt_field_naming_the_file():
    with pytest.raises(SchemaError, match=r"x/config.pbtxt does not match Triton's model configuration schema.*"
                                          r"max_batch_sise"):
        parse('name: "m"\nmax_batch_sise: 4\n', where="x/config.pbtxt")
    with pytest.raises(SchemaError, match="data_type"):
        parse('input { name: "T" data_type: TYPE_TEXT dims: 1 }')


def test_python_runner_config_keeps_tensors_and_drops_native_only_fields():
    native = encoder_config(plan_for("cuda"), INFO, ServingOptions(tensorrt=True), gpu=True)
    runner = roundtrip(python_runner_config(native, "onnx", threads=2))
    assert runner.backend == "python" and not runner.platform and not runner.default_model_filename
    assert not runner.HasField("optimization")
    assert all(t.allow_ragged_batch for t in runner.input)
    assert [t.name for t in runner.output] == ["sentence_embedding"]
    assert runner.parameters["runtime_class"].string_value == "OnnxEncoder"
    assert runner.parameters["threads"].string_value == "2"
    assert runner.dynamic_batching == native.dynamic_batching


def test_a_tensorrt_encoder_keeps_tensorrt_in_the_local_runner_with_a_lasting_engine_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native = encoder_config(plan_for("cuda"), INFO, ServingOptions(tensorrt=True), gpu=True)
    runner = roundtrip(python_runner_config(native, "onnx"))
    assert runner.parameters["tensorrt_cache"].string_value == str(tmp_path / "emb-provider" / "tensorrt" /
                                                                   native.name / INFO.graph_sha256[:16])
    plain = encoder_config(plan_for("cuda"), INFO, ServingOptions(), gpu=True)
    assert "tensorrt_cache" not in roundtrip(python_runner_config(plain, "onnx")).parameters


def build_tiny(tmp_path: Path, dest: Path, **artefact_kwargs) -> dict:
    artefact = make_artefact(tmp_path / f"art-{len(list(tmp_path.iterdir()))}", **artefact_kwargs)
    with staging(dest) as root:
        manifest = assemble(root, [ModelEntry(plan_for(), artefact)], ServingOptions())
        publish(root, dest)
    return manifest


def test_assembled_repository_layout_manifest_and_readme(tmp_path):
    dest = tmp_path / "repo"
    manifest = build_tiny(tmp_path, dest)
    assert sorted(p.name for p in dest.iterdir()) == [".gitkeep", "README.md", "manifest.json", "tiny",
                                                      "tiny_encoder", "tiny_tokenizer"]
    assert (dest / "tiny_encoder/1/model.onnx").is_file()
    assert (dest / "tiny_tokenizer/1/model.py").is_file() and (dest / "tiny_tokenizer/1/tokenizer").is_dir()
    on_disk = json.loads((dest / MANIFEST).read_text())
    assert on_disk == manifest
    model = manifest["models"][0]
    assert (model["name"], model["dim"], model["precision"], model["route"]) == ("tiny", DIM, "fp32", "onnx-fp32")
    assert model["reasons"] and model["artefact"]["files"]["model.onnx"]["sha256"] == "x"
    assert {"onnxruntime", "tritonclient", "python"} <= set(manifest["tool_versions"])
    assert manifest["built_at"].endswith("Z") and manifest["serving"]["max_batch_size"] == 64
    assert not list(tmp_path.glob(".repo.building-*")), "staging directory left behind"


def test_generated_readme_is_the_tracked_placeholder():
    """Building into ./model_repository leaves `git status` clean: the generated README is the tracked one."""
    assert (REPO_ROOT / "model_repository" / "README.md").read_text() == README


def test_config_that_disagrees_with_the_graph_fails_validation(tmp_path):
    dest = tmp_path / "repo"
    with pytest.raises(SchemaError, match=r"config tensor 'sentence_embedding' is not in model.onnx"):
        build_tiny(tmp_path, dest, output="pooled")
    with pytest.raises(SchemaError, match=r"fixed batch axis 2"):
        build_tiny(tmp_path, dest, batch=2)
    assert not dest.exists()


def test_validation_names_a_broken_config(tmp_path):
    dest = tmp_path / "repo"
    build_tiny(tmp_path, dest)
    broken = dest / "tiny_tokenizer" / "config.pbtxt"
    broken.write_text(broken.read_text().replace("max_batch_size", "max_batch"))
    with pytest.raises(SchemaError, match=str(broken)):
        validate_repository(dest)


def test_republish_swaps_in_the_new_repository(tmp_path):
    dest = tmp_path / "repo"
    build_tiny(tmp_path, dest)
    (dest / "old-marker").write_text("previous build")
    build_tiny(tmp_path, dest)
    assert not (dest / "old-marker").exists() and (dest / MANIFEST).is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_failed_build_leaves_the_previous_repository_untouched(tmp_path):
    dest = tmp_path / "repo"
    build_tiny(tmp_path, dest)
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="export failed"):
        with staging(dest) as root:
            (root / "half-written").write_text("x")
            raise RuntimeError("export failed")
    after = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.glob(".repo.building-*"))


def test_stale_staging_of_a_dead_build_is_removed(tmp_path):
    dest = tmp_path / "repo"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".repo.building-{dead.stdout.strip()}"
    (stale / "x").mkdir(parents=True)
    build_tiny(tmp_path, dest)
    assert not stale.exists()


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path):
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "thesis.tex").write_text("do not delete")
    with pytest.raises(ConfigError, match=r"refusing to replace --repository .*precious.*no manifest.json"):
        build_tiny(tmp_path, dest)
    assert (dest / "thesis.tex").read_text() == "do not delete"
    placeholder = tmp_path / "placeholder"
    placeholder.mkdir()
    shutil.copy(REPO_ROOT / "model_repository" / "README.md", placeholder / "README.md")
    build_tiny(tmp_path, placeholder)  # the tracked README/.gitkeep placeholder may be replaced
    assert (placeholder / MANIFEST).is_file()


def test_local_view_runs_onnx_encoders_through_the_python_backend(tmp_path):
    dest = tmp_path / "repo"
    build_tiny(tmp_path, dest)
    view = make_local_view(dest, tmp_path / "view", gpu=False, encoder_threads=1)
    encoder = parse((view / "tiny_encoder" / "config.pbtxt").read_text())
    assert encoder.backend == "python" and all(t.allow_ragged_batch for t in encoder.input)
    version = view / "tiny_encoder" / "1"
    assert (version / "model.onnx").is_symlink() and (version / "model.onnx").resolve() == \
        (dest / "tiny_encoder/1/model.onnx").resolve()
    assert (version / "model.py").is_file() and (version / "onnx_encoder.py").is_file()
    assert (view / "tiny").is_symlink() and (view / "tiny_tokenizer").is_symlink()
    # the published repository stays NGC-native
    assert parse((dest / "tiny_encoder" / "config.pbtxt").read_text()).platform == "onnxruntime_onnx"
    assert not (dest / "tiny_encoder/1/model.py").exists()


def test_local_view_moves_gpu_instances_to_cpu_without_a_gpu(tmp_path):
    dest = tmp_path / "repo"
    artefact = make_artefact(tmp_path / "art")
    with staging(dest) as root:
        assemble(root, [ModelEntry(plan_for("cuda:8.0"), artefact)], ServingOptions())
        publish(root, dest)
    pb = model_config_pb2()
    assert parse((dest / "tiny_encoder/config.pbtxt").read_text()).instance_group[0].kind == \
        pb.ModelInstanceGroup.KIND_GPU
    view = make_local_view(dest, tmp_path / "view", gpu=False)
    assert parse((view / "tiny_encoder/config.pbtxt").read_text()).instance_group[0].kind == \
        pb.ModelInstanceGroup.KIND_CPU


def test_max_batch_tokens_is_an_encoder_parameter_per_target_and_reaches_the_local_runner():
    from exporter.triton.config import DEFAULT_BATCH_TOKENS

    def budget(config) -> int:
        return int(config.parameters["max_batch_tokens"].string_value)

    assert budget(encoder_config(plan_for(), INFO, ServingOptions(), gpu=False)) == DEFAULT_BATCH_TOKENS["cpu"]
    native = encoder_config(plan_for("cuda"), INFO, ServingOptions(), gpu=True)
    assert budget(native) == DEFAULT_BATCH_TOKENS["gpu"] > DEFAULT_BATCH_TOKENS["cpu"]
    assert budget(python_runner_config(native, "onnx")) == DEFAULT_BATCH_TOKENS["gpu"]  # the local view keeps it
    assert budget(encoder_config(plan_for(), INFO, ServingOptions(max_batch_tokens=777), gpu=False)) == 777
    with pytest.raises(ConfigError, match=r"--max-batch-tokens=-1 is out of range"):
        ServingOptions(max_batch_tokens=-1)

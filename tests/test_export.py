"""The encoder graph and the artefact writer: pooling variants on tiny random models, plain HF models, bad
input, the gate's failure path, and the atomic publish guarantee (interrupted builds leave nothing behind)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from exporter.artefact import ExportError, ExportOptions, GateError, export_artefact
from exporter.cli import main
from exporter.errors import ModelError
from exporter.export import read_encoder_spec
from exporter.precisions import PRECISIONS

from export_helpers import bundled_dir, plan_for, read_report, tiny_st_model

LIMIT = 24


@pytest.fixture(scope="module")
def tiny_mean(tmp_path_factory):
    return tiny_st_model(tmp_path_factory.mktemp("tiny-mean"))


def test_bundled_spec_reads_sentence_transformers_files():
    spec = read_encoder_spec(bundled_dir())
    assert spec.pooling == ("mean",) and spec.normalize and spec.dense == ()
    assert spec.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert (spec.max_seq_length, spec.dim, spec.sentence_transformers) == (256, 384, True)
    assert read_encoder_spec(bundled_dir(), max_length=128).max_seq_length == 128


def test_prompts_are_read_from_config_sentence_transformers(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(bundled_dir(), model, copy_function=os.symlink)  # links: the bundled files stay untouched
    assert (read_encoder_spec(model).prompts, read_encoder_spec(model).default_prompt_name) == ({}, None)
    config = model / "config_sentence_transformers.json"
    config.unlink()  # a link to the bundled file: replaced, never written through
    config.write_text(json.dumps({"prompts": {"query": "query: ", "doc": None}, "default_prompt_name": "query"}))
    spec = read_encoder_spec(model)
    assert (spec.prompts, spec.default_prompt_name) == ({"query": "query: ", "doc": ""}, "query")  # null reads as ""
    config.write_text(json.dumps({"prompts": {"query": "query: "}, "default_prompt_name": "passage"}))
    with pytest.raises(ModelError, match="default_prompt_name 'passage' is not one of the prompts \\('query'\\)"):
        read_encoder_spec(model)
    config.write_text(json.dumps({"prompts": ["query: "]}))
    with pytest.raises(ModelError, match="prompts must map prompt names to prefix strings"):
        read_encoder_spec(model)


@pytest.mark.slow
@pytest.mark.parametrize("pooling,dense", [("mean", False), ("cls", False), ("max", False), ("lasttoken", False),
                                           ("cls", True)])
def test_pooling_variants_match_sentence_transformers(tmp_path, pooling, dense):
    model = tiny_st_model(tmp_path, pooling=pooling, dense=dense)
    artefact = export_artefact(plan_for("fp32", "tiny"), model, tmp_path / "out",
                               ExportOptions(verification_limit=LIMIT))
    report = artefact.report
    assert report["gate"]["passed"] and report["gate"]["min_cosine"] >= 0.99999
    assert report["encoder"]["pooling"] == [pooling]
    assert report["dim"] == (32 if dense else 64) and report["max_seq_length"] == 64


@pytest.mark.slow
def test_plain_hf_model_gets_mean_pooling_and_normalize_with_warning(tiny_mean, tmp_path, caplog):
    plain = tiny_mean.parent / "hf"  # the transformer dir alone: no modules.json
    with caplog.at_level(logging.WARNING, logger="exporter"):
        artefact = export_artefact(plan_for("fp32", "plain"), plain, tmp_path,
                                   ExportOptions(verification_limit=LIMIT))
    assert any("no modules.json" in r.getMessage() for r in caplog.records)
    report = artefact.report
    assert report["encoder"]["pooling"] == ["mean"] and report["encoder"]["normalize"] is True
    assert report["encoder"]["sentence_transformers"] is False and report["gate"]["passed"]


def test_directory_without_config_names_the_missing_file(tmp_path):
    with pytest.raises(ModelError, match="config.json is missing"):
        export_artefact(plan_for("fp32"), tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "m-fp32").exists()


def test_unsupported_module_type_is_named(tmp_path, tiny_mean):
    import shutil

    model = shutil.copytree(tiny_mean, tmp_path / "model")
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 9, "name": "9", "path": "", "type": "sentence_transformers.models.CNN"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelError, match="'sentence_transformers.models.CNN' is not supported; allowed: Transformer"):
        read_encoder_spec(model)


def test_unknown_route_lists_available(tmp_path, tiny_mean):
    plan = dataclasses.replace(plan_for("fp32"), route="onnx-fp8")
    with pytest.raises(ExportError, match="route 'onnx-fp8' has no builder; available: onnx-fp16, onnx-fp32"):
        export_artefact(plan, tiny_mean, tmp_path)


def _leftovers(out):
    return [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_failed_gate_keeps_previous_artefact_and_accept_degraded_records_it(tmp_path, tiny_mean):
    plan = plan_for("fp32", "tiny")
    first = export_artefact(plan, tiny_mean, tmp_path, ExportOptions(verification_limit=LIMIT))
    before = (first.path / "report.json").read_bytes()
    with pytest.raises(GateError) as info:
        export_artefact(plan, tiny_mean, tmp_path, ExportOptions(thresholds={"fp32": 1.5}, verification_limit=LIMIT))
    message = str(info.value)
    assert "quality gate failed for tiny (fp32, onnx-fp32): min cosine" in message and "< threshold 1.5" in message
    assert "worst sentences:" in message and "--accept-degraded" in message and "mean" in message
    assert info.value.gate.passed is False and len(info.value.gate.worst) == 5
    assert (first.path / "report.json").read_bytes() == before and _leftovers(tmp_path) == []
    degraded = export_artefact(plan, tiny_mean, tmp_path,
                               ExportOptions(thresholds={"fp32": 1.5}, accept_degraded=True, verification_limit=LIMIT))
    gate = degraded.report["gate"]
    assert (gate["passed"], gate["accepted_degraded"], gate["threshold"]) == (False, True, 1.5)


@pytest.mark.slow
def test_interrupted_export_leaves_nothing_and_keeps_previous(tmp_path, tiny_mean, monkeypatch):
    plan = plan_for("fp32", "tiny")
    real = PRECISIONS["fp32"]

    def interrupted_build(job, work):  # the real build runs, then the user hits Ctrl-C mid-build
        real.build(job, work)
        raise KeyboardInterrupt

    interrupted = dataclasses.replace(real, build=interrupted_build)
    monkeypatch.setitem(PRECISIONS, "fp32", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_artefact(plan, tiny_mean, tmp_path, ExportOptions(verification_limit=LIMIT))
    assert list(tmp_path.iterdir()) == []  # first build interrupted: no artefact, no temp dir
    monkeypatch.setitem(PRECISIONS, "fp32", real)
    first = export_artefact(plan, tiny_mean, tmp_path, ExportOptions(verification_limit=LIMIT))
    files = first.report["files"]
    monkeypatch.setitem(PRECISIONS, "fp32", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_artefact(plan, tiny_mean, tmp_path, ExportOptions(verification_limit=LIMIT))
    assert read_report(first.path)["files"] == files and _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


@pytest.mark.slow
def test_staging_left_by_a_killed_export_is_removed_by_the_next_one(tmp_path, tiny_mean):
    """SIGKILL cannot be cleaned up after: the next export of the name removes the dead build's staging directory,
    and keeps the previous version that an interrupted two-rename publish parks beside the artefact."""
    args = ["export", "--model", str(tiny_mean), "--precision", "fp32", "--device", "cpu", "--out", str(tmp_path),
            "--verification-limit", str(LIMIT)]
    parked = tmp_path / ".st.previous-0f1e2d3c"
    parked.mkdir()
    build = subprocess.Popen([sys.executable, "-m", "exporter", *args], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not list(tmp_path.glob(".st.building-*")):
            assert build.poll() is None, f"export ended (code {build.returncode}) before it could be killed"
            assert time.monotonic() < deadline, "export never started building"
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    [stale] = tmp_path.glob(".st.building-*")
    assert not (tmp_path / "st").exists()
    assert main(args) == 0
    assert not stale.exists() and parked.is_dir() and read_report(tmp_path / "st")["gate"]["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [parked.name, "st"]


@pytest.mark.slow
def test_cli_export_json_and_summary(tmp_path, tiny_mean, capsys):
    args = ["export", "--model", str(tiny_mean), "--precision", "fp32", "--device", "cpu", "--out", str(tmp_path),
            "--verification-limit", str(LIMIT)]
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["failures"] == [] and data["artefacts"][0]["gate"]["passed"]
    assert data["artefacts"][0]["path"] == str(tmp_path / "st")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "st").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's owner-only mode
    assert main(args + ["--min-cosine", "fp32=0.9"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("st: fp32 (onnx-fp32)") and "of fp32; gate min cosine" in line and ">= 0.9? passed" in line


@pytest.mark.parametrize("flag,expected", [("int9=0.5", "--min-cosine 'int9=0.5': expected PRECISION=VALUE"),
                                           ("int8=high", "VALUE must be a cosine between -1 and 1"),
                                           ("int8", "expected PRECISION=VALUE"),
                                           ("int4:p5=0.9", "expected PRECISION=VALUE or PRECISION:p1=VALUE")])
def test_cli_rejects_bad_min_cosine(flag, expected, capsys):
    assert main(["export", "--min-cosine", flag]) == 2
    assert expected in capsys.readouterr().err


def test_min_cosine_sets_a_threshold_or_a_p1_floor():
    from exporter.cli.export import parse_thresholds

    assert parse_thresholds(["int8=0.985", "int4:p1=0.93"]) == {"int8": 0.985, "int4:p1": 0.93}


def test_cli_unknown_hub_id_offline(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", "--model", "no-such-org/no-such-model", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not in the local Hugging Face cache" in err and "HF_HUB_OFFLINE" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_fp16_for_architecture_unknown_to_optimizer_falls_back_with_warning(tmp_path, tiny_mean, monkeypatch,
                                                                            caplog):
    from exporter.precisions import _onnx

    monkeypatch.setattr(_onnx, "OPTIMIZER_TYPES", {})  # as if BERT were an architecture it has no fusions for
    with caplog.at_level(logging.WARNING, logger="exporter"):
        artefact = export_artefact(plan_for("fp16", "tiny16"), tiny_mean, tmp_path,
                                   ExportOptions(verification_limit=LIMIT))
    assert any("no fusions usable for model_type='bert'" in r.getMessage() for r in caplog.records)
    report = artefact.report
    assert report["route_details"]["optimizer"] == "none (no usable fusions for model_type 'bert')"
    assert report["gate"]["passed"] and report["gate"]["min_cosine"] >= 0.999


def test_unexpected_route_failure_is_an_export_error_naming_the_model(tmp_path, monkeypatch):
    """A library failing inside a route (not our own error types) fails that model with a clear ExportError."""
    from exporter import artefact
    from exporter.config import Config
    from exporter.devices import parse_device
    from exporter.models import ModelSpec, resolve_model_dir
    from exporter.plan import resolve

    def broken(job, work):
        raise RuntimeError("exporter backend exploded")

    plan = resolve(ModelSpec("sentence-transformers/all-MiniLM-L6-v2", "broken"), Config(), parse_device("cpu"))
    monkeypatch.setitem(PRECISIONS, plan.precision, dataclasses.replace(PRECISIONS[plan.precision], build=broken))
    with pytest.raises(artefact.ExportError, match=r"broken \(fp32, onnx-fp32\) failed: RuntimeError: exporter "
                                                   r"backend exploded"):
        artefact.export_artefact(plan, resolve_model_dir(plan.model), tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_models_file_pooling_override_is_exported_and_gated_against_the_same_pooling(tiny_mean, tmp_path):
    """A models file's ``pooling: [max, cls]`` replaces the model's mean pooling: the graph concatenates max and cls
    in that order, and the gate's reference (sentence-transformers' Pooling with those modes) pools the same way."""
    from exporter.plan import make_plans

    models = tmp_path / "models.yaml"
    models.write_text(f"- {{model: {json.dumps(str(tiny_mean))}, name: pooled, pooling: [max, cls]}}\n")
    plan = make_plans(models_file=models, device="cpu", precision="fp32").plans[0]
    assert plan.pooling == ("max", "cls")
    artefact = export_artefact(plan, tiny_mean, tmp_path / "out", ExportOptions(verification_limit=16))
    report = artefact.report
    assert report["dim"] == 128 and report["encoder"]["pooling"] == ["max", "cls"]
    assert report["encoder"]["pooling_override"] and report["gate"]["min_cosine"] >= 0.99999


def test_pooling_override_that_does_not_fit_the_dense_layer_is_a_clear_error(tmp_path):
    model = tiny_st_model(tmp_path, dense=True)
    assert read_encoder_spec(model, pooling=("mean",)).pooling == ("mean",)  # the model's own: no override
    with pytest.raises(ModelError, match=r"pooling \['cls', 'max'\] gives 128 features but the first Dense module "
                                         r"takes in_features=64"):
        read_encoder_spec(model, pooling=("cls", "max"))


def test_traceable_masks_leaves_transformers_5_mask_builder_alone(monkeypatch):
    """transformers >= 5 builds masks by broadcasting (q_length/q_offset signature, vmap only on request), so the
    export must not swap in the 4.x replacement: with it, transformers 5.17 failed every export ("broadcast_mask()
    missing 1 required positional argument: 'cache_position'", seen on the GPU machine)."""
    from transformers import masking_utils

    from exporter.export import traceable_masks

    def sdpa_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, **kwargs):
        raise AssertionError("not called here")

    monkeypatch.setattr(masking_utils, "sdpa_mask", sdpa_mask)
    with traceable_masks():
        assert masking_utils.sdpa_mask is sdpa_mask

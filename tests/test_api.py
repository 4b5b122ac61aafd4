"""The library API (``exporter.__all__``), the error tree's exit codes, and the files' format_version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import exporter
from exporter.errors import ConfigError, ExporterError, ExportError, GateError, ModelError, ServeError
from exporter.records import FORMAT_VERSION, check_format_version, read_report
from exporter.triton.repository import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_public_names_resolve_and_only_export_artefact_imports_the_export_stack():
    script = ("import sys, exporter\n[getattr(exporter, n) for n in exporter.__all__ if n != 'export_artefact']\n"
              "print(sorted(m for m in ('torch', 'onnxruntime', 'transformers') if m in sys.modules))\n"
              "exporter.export_artefact")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.stdout.strip() == "[]", out.stderr


def test_error_tree_and_exit_codes():
    assert {cls: cls.exit_code for cls in (ConfigError, ModelError, ExportError, GateError, ServeError)} == {
        ConfigError: 2, ModelError: 2, ExportError: 1, GateError: 1, ServeError: 1}
    assert all(issubclass(cls, ExporterError) for cls in (ConfigError, ModelError, ExportError, ServeError))
    assert issubclass(GateError, ExportError) and issubclass(ConfigError, ValueError)
    assert exporter.ConfigError is ConfigError


def test_make_plans_from_ids_and_overrides():
    plans = exporter.make_plans(device="cpu", precision="int8")
    assert [p.precision for p in plans] == ["int8"] and plans.device.label == "cpu"
    assert plans.model_dir(plans.plans[0].model).is_dir()


@pytest.mark.parametrize("data, ok", [({"format_version": FORMAT_VERSION}, True), ({"format": 1}, True), ({}, True),
                                      ({"format_version": FORMAT_VERSION + 1}, False)])
def test_format_version_is_checked(data, ok):
    if ok:
        assert check_format_version(data, "x") is data
    else:
        with pytest.raises(ConfigError, match=r"x has format_version 2; this emb-provider reads up to 1"):
            check_format_version(data, "x")


def test_newer_report_and_manifest_are_refused(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "models": []}))
    with pytest.raises(ConfigError, match="report.json has format_version"):
        read_report(tmp_path)
    with pytest.raises(ConfigError, match="manifest.json has format_version"):
        read_manifest(tmp_path)


def test_make_plans_keeps_the_callers_order_and_checks_every_name():
    from exporter.models import ModelSpec

    spec = ModelSpec("sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2")
    assert [p.name for p in exporter.make_plans(["a/b", ModelSpec("c/d", "dd")], device="cpu")] == ["b", "dd"]
    for models in ([spec, spec], [spec, "sentence-transformers/all-MiniLM-L6-v2"]):
        with pytest.raises(ConfigError, match="'all-minilm-l6-v2' is used by both"):
            exporter.make_plans(models, device="cpu")
    with pytest.raises(ConfigError, match="'../bad' is not a valid repository name"):
        exporter.make_plans([ModelSpec("x/y", "../bad")], device="cpu")

"""``exporter eval``: STS-B parsing, the Spearman table, and writing it into the docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.cli.eval import BEGIN, END, write_docs
from exporter.cpu import cpu_info
from exporter.errors import ConfigError
from exporter.stsb import load_stsb, row

# ../shared beside the checkout (as in CI), like bench.DEFAULT_STSB
STSB = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb" / "sts-dev.csv")


def test_load_stsb_reads_score_and_pairs(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text('main-captions\tMSRvid\t2012test\t0001\t5.000\tA "quoted" man.\tA man.\n'
                    "main-news\theadlines\t2015\t0002\t0.5\tx\ty\tsource-a\tsource-b\n", encoding="utf-8")
    pairs = load_stsb(path)
    assert pairs.first == ['A "quoted" man.', "x"] and pairs.second == ["A man.", "y"]
    assert pairs.gold.tolist() == [5.0, 0.5] and pairs.sentences == ['A "quoted" man.', "x", "A man.", "y"]


def test_load_stsb_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_stsb(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1 is not an STS-B row"):
        load_stsb(bad)


def test_row_targets():
    assert row("fp32", 0.8675, 0.8672)["meets_target"] is True
    assert row("fp32", 0.8690, 0.8672)["meets_target"] is False
    assert row("int8", 0.8630, 0.8672)["meets_target"] is True
    assert row("int4", 0.8500, 0.8672) | {"delta": -0.0172} == row("int4", 0.8500, 0.8672)
    assert row("int4", 0.8500, 0.8672)["meets_target"] is False


def test_write_docs_replaces_marked_block(tmp_path):
    doc = tmp_path / "quality.md"
    doc.write_text("# Quality\n\nintro\n", encoding="utf-8")
    write_docs(doc, "| old |\n")
    write_docs(doc, "| new |\n")
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Quality\n\nintro\n") and text.count(BEGIN) == 1 and "| new |" in text
    assert "| old |" not in text and text.rstrip().endswith(END)


@pytest.mark.slow
def test_eval_fp32_on_dev_pairs(tmp_path, capsys):
    doc = tmp_path / "quality.md"
    rc = main(["eval", "--stsb", STSB, "--pairs", "200", "--precision", "fp32", "--verification-limit", "16",
               "--json", "--write-docs", str(doc)])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["pairs"] == 200
    (fp32,) = result["rows"]
    assert fp32["precision"] == "fp32" and fp32["meets_target"] and abs(fp32["delta"]) <= 0.001
    assert fp32["sts_cosine"]["min"] >= 0.9999 and fp32["gate"]["passed"]
    assert "| fp32 | onnx-fp32 |" in doc.read_text(encoding="utf-8")
    assert result["cpu"] == cpu_info().to_dict()  # every figure names its CPU and int8 features
    assert f"Measured on {cpu_info().describe()}." in doc.read_text(encoding="utf-8")

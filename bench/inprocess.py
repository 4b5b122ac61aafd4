"""In-process runners, each measured in its own subprocess so that its resident memory is its own.

``python -m bench.inprocess SPEC.json OUT.json`` loads one runner — the sentence-transformers baseline
or one exported artefact through the runtime loader the Triton python-backend model uses — runs every workload
of the spec through :func:`bench.measure.measure` (concurrency 1, one batch per call) and writes the figures
plus RSS before loading, after loading and at peak. The parent (:func:`run_inprocess`) only launches it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("exporter.bench.inprocess")


Call = Callable[[list[str]], Any]
Loader = Callable[[], Call]


def sentence_transformers_runner(spec: dict[str, Any]) -> Loader:
    """The unconverted model as users run it: fp32 on CPU, fp16 on GPU."""
    from sentence_transformers import SentenceTransformer

    def load() -> Call:
        model = SentenceTransformer(spec["path"], device=spec["device"])
        if spec["device"].startswith("cuda"):
            model.half()
        model.max_seq_length = spec["max_length"]
        return lambda batch: model.encode(batch, batch_size=len(batch), convert_to_numpy=True)

    return load


def artefact_runner(spec: dict[str, Any]) -> Loader:
    """A built artefact as the server runs it: the loader module and class the python-backend encoder model
    loads (:func:`exporter.triton.config.runtime_class`) over the repository's encoder files, fed the way the
    tokenizer model feeds it (``tokenizers``, truncation to ``max_seq_length``, padding to the longest text of
    the request; pad id 0 is masked by ``attention_mask`` either way). Only that runtime's libraries are
    imported, so an ONNX route's RSS is what an ONNX Runtime process pays, without torch."""
    from tokenizers import Tokenizer

    from exporter import read_report
    from exporter.triton.config import runtime_class

    report = read_report(Path(spec["path"]))  # written by the build, in another process
    encoder_cls = runtime_class(report["runtime"])
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}

    def load() -> Call:
        encoder = encoder_cls(spec["path"], device=spec["device"])
        tokenizer = Tokenizer.from_file(str(Path(spec["tokenizer"]) / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=report["max_seq_length"])
        tokenizer.enable_padding()

        def call(batch: list[str]) -> Any:
            encodings = tokenizer.encode_batch(batch)
            return encoder({name: np.array([getattr(e, fields[name]) for e in encodings], dtype=np.int64)
                            for name in encoder.input_names})

        return call

    return load


RUNNERS: dict[str, Callable[[dict[str, Any]], Loader]] = {
    "sentence-transformers": sentence_transformers_runner,
    "artefact": artefact_runner,
}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the runner named in ``spec`` and measure every workload; runs inside the subprocess."""
    from tqdm import tqdm

    from bench.machine import self_peak_rss_mb, self_rss_mb
    from bench.measure import Batches, Settings, measure

    load = RUNNERS[spec["runner"]](spec)  # imports the runtime's libraries
    rss_before = self_rss_mb()
    start = time.perf_counter()
    call = load()
    load_s = time.perf_counter() - start
    settings = Settings(**spec["settings"])
    workloads = [Batches.from_dict(w) for w in spec["workloads"]]
    results = []
    with tqdm(total=len(workloads) * settings.repeats, desc=f"in-process {spec['label']}", unit="window",
              file=sys.stderr, leave=False) as bar:
        for batches in workloads:
            bar.set_postfix_str(batches.name)
            result = measure([call], batches, settings, on_window=lambda: bar.update(1))
            peak = self_peak_rss_mb()  # grows with the longest input so far: workloads run short to long
            results.append({"runner": spec["label"], **result, "rss_mb": peak, "model_rss_mb": peak - rss_before})
    rss = {"libraries": rss_before, "after_run": self_rss_mb(), "peak": self_peak_rss_mb(),
           "torch_imported": "torch" in sys.modules}
    return {"label": spec["label"], "load_s": load_s, "rss_mb": rss, "results": results}


def run_inprocess(spec: dict[str, Any], work: Path, timeout_s: float) -> dict[str, Any]:
    """Run one runner in a fresh interpreter and return its record (raises with the worker's stderr tail)."""
    spec_path, out_path = work / f"{spec['label']}.spec.json", work / f"{spec['label']}.out.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    # the child inherits this process's environment (PYTHONPATH included, e.g. a carried onnxruntime-gpu) and
    # working directory, so it imports the same bench and exporter as this process
    tail = b""
    with subprocess.Popen([sys.executable, "-m", "bench.inprocess", str(spec_path), str(out_path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        while chunk := proc.stderr.read1(4096):  # progress bars pass through; the tail explains a failure
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            tail = (tail + chunk)[-3000:]
        timer.cancel()
    if proc.returncode != 0:
        raise RuntimeError(f"in-process runner {spec['label']} failed (exit {proc.returncode}, limit "
                           f"{timeout_s:.0f} s): " + tail.decode(errors="replace").strip()[-1500:])
    return json.loads(out_path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    record = worker(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    Path(sys.argv[2]).write_text(json.dumps(record), encoding="utf-8")

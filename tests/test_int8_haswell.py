"""The int8 artefact on ONNX Runtime's real AVX2 kernels (no VNNI), whatever CPU runs the suite.

``qemu-x86_64 -cpu Haswell`` (Debian's qemu-user) emulates a CPU with AVX2 and without AVX-512/VNNI, so ONNX
Runtime picks its ``vpmaddubsw`` int8 GEMM there: the kernel whose 16-bit pair sums saturated the old graph
(docs/quality.md). The numpy model of that kernel (test_routes_onnx.py) runs everywhere; this is the optional
check on the real kernel, skipped where qemu-user is not installed (``.ci/run`` installs it when it can).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from exporter.triton.runtime.onnx_encoder import OnnxEncoder
from exporter.verification_set import verification_sentences
from exporter.verify import cosines, encode, reference_embeddings

from export_helpers import bundled_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="qemu-user is not installed")]
# the inputs that saturated the old graph on AVX2, and a spread of the verification set (qemu is ~50x slower)
TEXTS = ["ISBN 978-3-16-148410-0", "?", "a" * 400, "no", "yes"] + verification_sentences()[::20]
EMBED = """
import json, sys
import numpy as np
from exporter.triton.runtime.onnx_encoder import OnnxEncoder
from exporter.verify import encode
artefact, texts = sys.argv[1], json.loads(sys.stdin.read())
vectors = encode(OnnxEncoder(artefact, threads=1), artefact + "/tokenizer", texts, 256, batch=1)
np.save(sys.argv[2], vectors)
"""


def test_int8_vectors_on_real_avx2_kernels_match_this_cpu(bundled_artefact, tmp_path):
    artefact = str(bundled_artefact("int8").path)
    out = tmp_path / "haswell.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", EMBED, artefact, str(out)],
                   input=json.dumps(TEXTS), text=True, env=env, check=True, capture_output=True, timeout=900)
    haswell = np.load(out)
    here = encode(OnnxEncoder(artefact, threads=1), bundled_artefact("int8").path / "tokenizer", TEXTS, 256, batch=1)
    reference = reference_embeddings(bundled_dir(), TEXTS, 256)
    # the old graph: 0.98 between the two kernels and 0.983 to fp32 on AVX2; exact integer sums leave only
    # float-kernel order (min 0.9995 over the whole verification set, docs/quality.md)
    assert cosines(haswell, here).min() >= 0.999
    assert cosines(haswell, reference).min() >= 0.99  # the int8 gate holds on the AVX2 kernel too

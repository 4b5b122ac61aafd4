"""What a figure or an artefact was made with: the installed versions of the libraries that shape the numbers.

One list for every record that names its libraries: an artefact's ``report.json`` (``"versions"``, next to the
Python version), the CPU benchmark's ``machine.libraries`` and the GPU benchmark's ``meta.libraries``.
"""

from __future__ import annotations

from importlib import metadata

LIBRARIES: tuple[str, ...] = (
    "torch", "transformers", "sentence-transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tokenizers",
    "safetensors", "bitsandbytes", "numpy", "tritonclient", "nvidia-pytriton", "emb-provider",
)
"""Distribution names, in the order records list them: export and runtime stack first, then serving."""


def versions() -> dict[str, str]:
    """``{distribution: version}`` for each of :data:`LIBRARIES` installed here (absent ones are left out)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


__all__ = ["LIBRARIES", "versions"]

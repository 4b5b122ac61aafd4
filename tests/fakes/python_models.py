"""Import a served python-backend model file (``tokenizer_model.py``, ``encoder_model.py``) against the fake
``triton_python_backend_utils``, by path, from wherever the exporter keeps them."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

from . import pb_utils

ROOT = Path(__file__).resolve().parents[2]
# Where the exporter keeps the model files (exporter.triton.repository.MODELS_DIR, not imported: this stays light).
LOCATIONS = (ROOT / "exporter" / "triton" / "models",)
_counter = itertools.count()


def model_file(name: str) -> Path:
    """``exporter/.../<name>.py``, in whichever of :data:`LOCATIONS` holds it."""
    for folder in LOCATIONS:
        if (folder / f"{name}.py").is_file():
            return folder / f"{name}.py"
    raise FileNotFoundError(f"{name}.py is in none of: {', '.join(str(p.relative_to(ROOT)) for p in LOCATIONS)}")


def load_python_model(name: str) -> ModuleType:
    """A fresh module object of the model file ``name`` whose ``pb_utils`` is the fake (:mod:`fakes.pb_utils`).

    The module keeps the fake it was imported with, so sys.modules is restored at once."""
    path = model_file(name)
    spec = importlib.util.spec_from_file_location(f"_served_{name}_{next(_counter)}", path)
    module = importlib.util.module_from_spec(spec)
    with pb_utils.install():
        spec.loader.exec_module(module)
    return module

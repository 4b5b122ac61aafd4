"""The local view of a repository: what the python-backend-only ``tritonserver`` bundled in ``nvidia-pytriton`` can
serve, derived from a repository that ``exporter build`` wrote (``exporter serve`` makes it in its work directory).

ONNX encoders (``onnxruntime_onnx``, which that binary cannot load) become python-backend models that run the same
``model.onnx`` through ONNX Runtime, and KIND_GPU instances become KIND_CPU on a host without a GPU. Artefacts are
symlinked, never copied; the published repository itself stays NGC-native and untouched.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import python_runner_config
from .repository import install_runner
from .schema import model_config_pb2, parse, render

log = logging.getLogger(__name__)


def make_local_view(repository: Path, target: Path, *, gpu: bool, encoder_threads: int = 0) -> Path:
    """A repository the python-backend-only binary can serve, derived from ``repository`` (left untouched)."""
    pb = model_config_pb2()
    target.mkdir(parents=True)
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        model_dir = config_path.parent
        config = parse(config_path.read_text(encoding="utf-8"), where=str(config_path))
        runner = config.platform == "onnxruntime_onnx"
        if runner:
            config = python_runner_config(config, "onnx", encoder_threads)
        on_gpu = any(group.kind == pb.ModelInstanceGroup.KIND_GPU for group in config.instance_group)
        if on_gpu and not gpu:
            log.warning("%s targets a GPU but this host has none: serving it on CPU", model_dir.name)
            for group in config.instance_group:
                group.kind = pb.ModelInstanceGroup.KIND_CPU
                group.ClearField("gpus")
        if not runner and not (on_gpu and not gpu):
            (target / model_dir.name).symlink_to(model_dir.resolve(), target_is_directory=True)
            continue
        view = target / model_dir.name
        for version in (p for p in model_dir.iterdir() if p.is_dir()):
            (view / version.name).mkdir(parents=True)
            for item in version.iterdir():
                (view / version.name / item.name).symlink_to(item.resolve())
            if runner:
                install_runner(view / version.name, "onnx")
        (view / "config.pbtxt").write_text(render(config), encoding="utf-8")
    return target

"""The environment ``scripts/gpu.sh`` (``make gpu-bench``) runs in on a GPU host: one Python environment that Triton's
python stub, the served models, the build and the benchmark all use.

Why one environment, and why it is made this way:

- The stub of the ``nvidia-pytriton`` 0.7.0 wheel runs the environment of the first ``python3`` on PATH (the
  launcher, :mod:`exporter.serve`, puts the serving interpreter's ``bin/`` first) and needs numpy<2 there; it
  ignores PYTHONPATH on some hosts, so the environment must hold numpy<2 itself.
- GPU hosts ship their CUDA torch stack in the system Python (NGC containers) or in a venv of their own (the
  device image here: ``/opt/torch/.venv``, numpy 2). A venv made with ``--system-site-packages`` sees the
  *base* interpreter's packages, not another venv's, so over a venv host it would have no torch. Therefore:
  a host Python that is itself a venv is **cloned** (a plain copy of its directory, ~20 s for 7 GB on the H200
  machine); a system Python gets a ``--system-site-packages`` venv. Either way the host's own files are never
  changed, and no ``.pth`` file or ``sitecustomize`` is involved.
- ``scripts/gpu-requirements.txt`` is then installed *into* that environment: numpy 1.26 with numpy-1 builds of
  scipy and scikit-learn (transformers imports scikit-learn, which imports scipy: a host's numpy-2-only builds of
  them would break every torch-route model under numpy 1.26), onnxruntime-gpu, bitsandbytes, the client and
  the bundled model.

Runs with the host's interpreter and the standard library only (it creates the environment the rest needs):

    python3 -m bench.gpu_env create .venv-gpu      # clone or venv, as above
    .venv-gpu/bin/python -m bench.gpu_env libs     # LD_LIBRARY_PATH entries for ONNX Runtime's CUDA provider
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_PROBE = "import json, sys; print(json.dumps({'prefix': sys.prefix, 'base_prefix': sys.base_prefix, " \
         "'version': '%d.%d' % sys.version_info[:2]}))"
SUPPORTED = ("3.11", "3.12")  # the python stubs the pinned nvidia-pytriton wheel ships, and numpy<2 wheels exist


@dataclass(frozen=True)
class HostPython:
    """The interpreter whose CUDA stack the environment reuses."""

    executable: str
    prefix: str
    base_prefix: str
    version: str

    @property
    def is_venv(self) -> bool:
        return os.path.realpath(self.prefix) != os.path.realpath(self.base_prefix)


def host_python(executable: str) -> HostPython:
    """Ask ``executable`` where it lives; ValueError naming it when it cannot be run."""
    try:
        out = subprocess.run([executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"PYTHON={executable!r} could not be run: {exc}") from None
    return HostPython(executable, **json.loads(out.stdout.strip().splitlines()[-1]))


def creation_command(host: HostPython, target: Path) -> list[str]:
    """The command that makes the environment at ``target`` (see the module docstring for why two ways)."""
    if host.version not in SUPPORTED:
        raise ValueError(f"{host.executable} is Python {host.version}; the Triton python stub and numpy<2 need "
                         f"Python {' or '.join(SUPPORTED)}: set PYTHON to such an interpreter with CUDA torch")
    if host.is_venv:
        return ["cp", "-a", host.prefix, str(target)]
    return [host.executable, "-m", "venv", "--system-site-packages", str(target)]


def cuda_library_dirs(site_packages: Path) -> list[str]:
    """The CUDA libraries that came with torch's wheels (``nvidia/<lib>/lib``, or ``nvidia/cu13/lib`` in the CUDA 13
    wheels): ONNX Runtime's CUDA provider loads cuBLAS/cuDNN/cuFFT by soname and finds them only through
    LD_LIBRARY_PATH when no system CUDA is installed."""
    nvidia = site_packages / "nvidia"
    return sorted(str(p) for p in nvidia.glob("*/lib") if p.is_dir())


def _site_packages() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_env", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="make the environment (clone a venv host, else a venv over the host)")
    create.add_argument("target", type=Path)
    create.add_argument("--python", default=sys.executable, help="the host interpreter (default: this one)")
    sub.add_parser("libs", help="print LD_LIBRARY_PATH entries for this interpreter's torch CUDA libraries")
    args = parser.parse_args(argv)
    if args.command == "libs":
        print(os.pathsep.join(cuda_library_dirs(_site_packages())))
        return 0
    if args.target.exists():
        print(f"error: {args.target} exists already; remove it to make it again", file=sys.stderr)
        return 2
    try:
        command = creation_command(host_python(args.python), args.target)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("creating the environment:", " ".join(command), flush=True)
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())

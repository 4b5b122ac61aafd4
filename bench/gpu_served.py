"""``python -m bench.cpu`` on the GPU machine (``scripts/gpu_served.sh``), whose main environment needs numpy 2
(scipy) while Triton's python stub needs numpy<2. The stub ignores PYTHONPATH: the ``.pth`` hook that
``scripts/gpu_served.sh`` installs puts numpy 1.26 (in /tmp/np1) first on the stub's sys.path. The server's
PYTHONPATH set here (``exporter.serve.ServerSettings.env``) reaches tritonserver itself, not the stub; the stub
check is skipped (``check_environment=False``) because it reads the environment without that hook.
"""

from __future__ import annotations

import os
import sys

from bench import cpu

NUMPY1 = "/tmp/np1"


def server_options() -> dict[str, object]:
    """The ServerSettings fields every served run of this benchmark gets on the GPU machine."""
    pythonpath = os.pathsep.join(p for p in (NUMPY1, os.environ.get("PYTHONPATH")) if p)
    return {"env": {"PYTHONPATH": pythonpath}, "check_environment": False}


def main(argv: list[str] | None = None) -> int:
    return cpu.main(argv, server_options=server_options())


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: the main job on the bundled default model, as far as it exists (now: the precision plan)."""

import subprocess
import sys

for device in ("cpu", "cuda:8.0", "cuda:7.5"):
    subprocess.run([sys.executable, "-m", "exporter", "plan", "--device", device, "--why"], check=True)

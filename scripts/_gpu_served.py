"""Run scripts/benchmark.py on the GPU machine, whose main environment needs numpy 2 (scipy) while Triton's
python stub needs numpy<2: numpy 1.26 (in /tmp/np1) goes first on the *server's* PYTHONPATH only."""
import os
import runpy
import sys

sys.path.insert(0, os.getcwd())
import exporter.serve as serve  # noqa: E402

NUMPY1 = "/tmp/np1"
_command = serve.TritonServer._command


def command_with_numpy1(self, work):
    command, env = _command(self, work)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (NUMPY1, env.get("PYTHONPATH")) if p)
    return command, env


serve.TritonServer._command = command_with_numpy1
serve._check_stub_environment = lambda: None  # checked by hand: /tmp/np1 holds numpy 1.26.4
sys.argv = ["scripts/benchmark.py"] + sys.argv[1:]
runpy.run_path("scripts/benchmark.py", run_name="__main__")

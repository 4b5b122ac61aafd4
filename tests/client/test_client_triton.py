"""Without tritonclient (or a module its ``[http]`` extra installs), importing the client names what is missing and
the ``pip install`` that fixes it. Each case runs a fresh interpreter in which the module is absent the way Python
itself records a missing module: ``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PIP = 'pip install "tritonclient[http]"'


def without(module: str, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where ``module`` cannot be imported."""
    return subprocess.run([sys.executable, "-c", f"import sys\nsys.modules[{module!r}] = None\n{code}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("module", ["tritonclient", "geventhttpclient", "aiohttp"])
def test_missing_tritonclient_names_the_module_and_the_pip_command(module):
    result = without(module, "from client import EmbeddingClient")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"ModuleNotFoundError: the emb-provider client needs the 'tritonclient' package with its HTTP "
                    f"extra, but module {module!r} is missing; install it with: {PIP}"), result.stderr
    assert "None in sys.modules" not in result.stderr  # Python's own message is replaced, not chained


def test_the_error_is_a_module_not_found_error_carrying_the_name():
    code = ("import json\n"
            "try:\n"
            "    import client\n"
            "except ModuleNotFoundError as exc:\n"
            "    print(json.dumps({'name': exc.name, 'message': str(exc)}))\n")
    result = without("tritonclient", code)
    assert result.returncode == 0, result.stderr
    error = json.loads(result.stdout)
    assert error["name"] == "tritonclient" and PIP in error["message"]

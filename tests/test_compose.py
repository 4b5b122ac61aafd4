"""docker-compose.yml and docker/Dockerfile, checked statically (no docker engine on these machines).

The generated python-backend models must import only what the image has or the Dockerfile installs: the imports
are read from the very files the repository writer copies into an NGC-served repository.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

from exporter.triton.config import RUNTIME_LOADERS
from exporter.triton.repository import MODELS_DIR, RUNTIME_DIR

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
IN_IMAGE = {"numpy", "triton_python_backend_utils"}  # shipped by nvcr.io/nvidia/tritonserver:*-py3
PIP_NAMES = {"tokenizers": "tokenizers", "torch": "torch", "transformers": "transformers",
             "safetensors": "safetensors", "bitsandbytes": "bitsandbytes"}


def service(name: str) -> dict:
    return COMPOSE["services"][name]


def test_services_mount_the_repository_read_only_and_publish_on_loopback():
    for name in ("triton", "triton-cpu"):
        svc = service(name)
        assert "./model_repository:/models:ro" in svc["volumes"]
        assert "--model-repository=/models" in svc["command"]
        ports = svc["ports"]
        assert sorted(p.split(":")[-1] for p in ports) == ["8000", "8001", "8002"]
        assert all(p.startswith("127.0.0.1:") for p in ports), ports
        assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
        assert svc["shm_size"] and svc["build"]["dockerfile"] == "docker/Dockerfile"
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()


def test_gpu_service_reserves_a_gpu_and_the_cpu_variant_does_not():
    devices = service("triton")["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "profiles" not in service("triton")  # plain `docker compose up` starts the GPU service
    assert "deploy" not in service("triton-cpu") and service("triton-cpu")["profiles"] == ["cpu"]


def test_the_gpu_service_keeps_tensorrt_engines_on_a_volume_where_the_configs_point():
    from exporter.triton.config import CONTAINER_TRT_CACHE

    assert f"trt-cache:{CONTAINER_TRT_CACHE}" in service("triton")["volumes"]
    assert "trt-cache" in COMPOSE["volumes"]


def test_dockerfile_uses_an_ngc_image_recent_enough_for_the_exported_graphs():
    match = re.search(r"ARG TRITON_IMAGE=nvcr\.io/nvidia/tritonserver:(\d\d)\.(\d\d)-py3", DOCKERFILE)
    assert match, "FROM must default to an NGC tritonserver -py3 image"
    assert (int(match.group(1)), int(match.group(2))) >= (25, 8), \
        "images older than 25.08 (ORT 1.23) were never checked against the exported graphs"
    assert "FROM ${TRITON_IMAGE}" in DOCKERFILE


def served_python_files() -> list[Path]:
    """What the repository writer copies into an NGC-served repository (ONNX encoders run natively there)."""
    files = [MODELS_DIR / "tokenizer_model.py", MODELS_DIR / "encoder_model.py"]
    files += [RUNTIME_DIR / loader for runtime, (loader, _) in RUNTIME_LOADERS.items() if runtime != "onnx"]
    return files


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def test_dockerfile_installs_every_import_of_the_generated_python_models():
    installs = " ".join(line for line in DOCKERFILE.splitlines() if "pip install" in line or line.strip()
                        .startswith('"'))
    needed = set().union(*(imports(path) for path in served_python_files())) - IN_IMAGE
    assert needed, "the import scan found nothing: it is broken"
    unknown = needed - set(PIP_NAMES)
    assert not unknown, f"generated models import {sorted(unknown)}: install them in docker/Dockerfile"
    missing = [PIP_NAMES[name] for name in sorted(needed) if not re.search(rf'"{PIP_NAMES[name]}[=<>"]', installs)]
    assert not missing, f"docker/Dockerfile does not pip install {missing}"


GATEWAYS = {"gateway": "triton", "gateway-cpu": "triton-cpu"}  # gateway service -> the Triton it fronts


def test_gateway_services_start_after_a_healthy_triton_and_publish_8080_on_loopback():
    for name, triton in GATEWAYS.items():
        svc = service(name)
        assert svc["depends_on"] == {triton: {"condition": "service_healthy"}}
        assert svc["command"][svc["command"].index("--triton-url") + 1] == f"{triton}:8000"
        assert svc["ports"] == ["127.0.0.1:8080:8080"]
        assert "/ready" in " ".join(svc["healthcheck"]["test"]) and "8080" in " ".join(svc["healthcheck"]["test"])
        assert svc["healthcheck"]["test"][:2] == ["CMD", "python"]  # the slim image has no curl
        assert svc.get("profiles") == service(triton).get("profiles")  # up with the Triton of the same variant
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()


def test_gateway_image_installs_what_the_gateway_imports():
    import tomllib

    dockerfile = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[gateway]"' in dockerfile
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, re.MULTILINE))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = {re.split(r"[<>=\[ ]", dep)[0].replace("-", "_") for dep in
                 extras["dependencies"] + extras["optional-dependencies"]["gateway"]}
    distributions = {"aiohttp": "tritonclient"}  # the async client's transport comes with tritonclient[http]
    needed = set().union(*(imports(path) for path in (ROOT / "gateway").glob("*.py")))
    needed |= set().union(*(imports(path) for path in (ROOT / "client").glob("*.py")))
    missing = {name for name in needed - copied if distributions.get(name, name) not in installed}
    assert not missing, f"the gateway image lacks {sorted(missing)}: add them to the 'gateway' extra"
    assert {"client", "gateway"} <= copied

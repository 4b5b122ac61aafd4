"""Model lists, repository names and model-directory resolution (offline)."""

import json
from pathlib import Path

import pytest

from exporter.errors import ConfigError, ModelError
from exporter.models import (
    DEFAULT_MODEL,
    check_model_dir,
    derive_name,
    native_dtype,
    resolve_model_dir,
    specs_from_args,
    validate_name,
)


@pytest.mark.parametrize("model,name", [
    ("sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2"),
    ("BAAI/bge-large-en-v1.5", "bge-large-en-v1-5"),
    ("/models/My Model/", "my-model"),
])
def test_derive_name(model, name):
    assert derive_name(model) == name


@pytest.mark.parametrize("bad", ["../x", "a/b", "/abs", "UPPER", "", "x_tokenizer", "a" * 64, "-lead"])
def test_validate_name_rejects_paths_and_reserved(bad):
    with pytest.raises(ConfigError) as err:
        validate_name(bad)
    assert repr(bad) in str(err.value)


def test_default_model_when_none_given_resolves_offline_to_bundled_copy():
    [spec] = specs_from_args(None, None)
    assert (spec.model, spec.name) == (DEFAULT_MODEL, "all-minilm-l6-v2")
    path = resolve_model_dir(DEFAULT_MODEL)
    assert (path / "modules.json").is_file() and native_dtype(path) is None  # stored as float32, no dtype key


def test_models_file(tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text("models:\n  - sentence-transformers/all-MiniLM-L6-v2\n"
                 "  - {model: BAAI/bge-large-en-v1.5, name: bge, group: large-models, max_length: 256, "
                 "precision: INT8}\n")
    a, b = specs_from_args(None, str(f))
    assert a.name == "all-minilm-l6-v2" and (b.name, b.group, b.max_length, b.precision) == \
        ("bge", "large-models", 256, "int8")


def test_models_file_prompts_and_truncate_dim(tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text("- {model: x, prompts: {query: 'query: ', doc: ''}, truncate_dim: 128}\n")
    [spec] = specs_from_args(None, str(f))
    assert (spec.prompts, spec.truncate_dim) == ({"query": "query: ", "doc": ""}, 128)


@pytest.mark.parametrize("content,fragment", [
    ("[]", "non-empty list"),
    ("- {model: x, truncate_dim: 0}", "truncate_dim=0 must be a positive integer"),
    ("- {model: x, truncate_dim: true}", "truncate_dim=True must be a positive integer"),
    ("- {model: x, prompts: [query]}", "prompts=['query'] must be a mapping of prompt name to prefix string"),
    ("- {model: x, prompts: {query: 3}}", "prompts={'query': 3} must be a mapping"),
    ("- {model: x, colour: red}", "unknown keys ['colour']"),
    ("- {model: x, max_length: -3}", "max_length=-3"),
    ("- {model: x, precision: fp8}", "'fp8'"),
    ("- {model: x, name: ../evil}", "'../evil'"),
    ("- [unclosed", "not valid YAML"),
    ("- {model: x, pooling: median}", "['median'] is not allowed; allowed: cls, max, mean"),
    ("- {model: x, pooling: [mean, mean_tokens]}", "a repeated mode"),
    ("- {model: x, pooling: []}", "must be a pooling mode name or a non-empty list"),
    ("- {model: x, trust_remote_code: yes please}", "trust_remote_code='yes please' must be true or false"),
])
def test_models_file_errors(tmp_path, content, fragment):
    f = tmp_path / "m.yaml"
    f.write_text(content)
    with pytest.raises(ConfigError, match=None) as err:
        specs_from_args(None, str(f))
    assert fragment in str(err.value)


def test_name_clash_is_an_error():
    with pytest.raises(ConfigError, match="used by both"):
        specs_from_args(["a/model", "b/model"], None)


def test_unknown_hub_id_offline_names_cache_and_alternative(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError) as err:
        resolve_model_dir("some-org/not-a-cached-model")
    message = str(err.value)
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE" in message
    assert "--model /path/to/model" in message


def test_directory_that_is_not_a_model_names_missing_file(tmp_path):
    with pytest.raises(ModelError, match="config.json is missing"):
        resolve_model_dir(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    with pytest.raises(ModelError, match="tokenizer.json"):
        check_model_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match="model.safetensors"):
        check_model_dir(tmp_path)
    assert native_dtype(tmp_path) == "bfloat16"


def test_missing_local_path_is_reported():
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_dir("./no/such/dir")


def test_models_file_pooling_and_trust_remote_code(tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text("- {model: a/one, pooling: [max_tokens, cls_token], trust_remote_code: true}\n"
                 "- {model: b/two, pooling: lasttoken}\n- c/three\n")
    one, two, three = specs_from_args(None, str(f))
    assert (one.pooling, one.trust_remote_code) == (("max", "cls"), True)  # in the order listed
    assert (two.pooling, two.trust_remote_code) == (("lasttoken",), False)
    assert (three.pooling, three.trust_remote_code) == (None, False)


def test_max_length_beyond_the_position_table_is_a_clear_error(tmp_path):
    from exporter.plan import make_plans

    from export_helpers import bundled_dir

    f = tmp_path / "m.yaml"
    f.write_text(f"- {{model: {bundled_dir()}, max_length: 1024}}\n")
    with pytest.raises(ConfigError) as err:
        make_plans(models_file=f, device="cpu")
    assert "max_length=1024" in str(err.value) and "max_position_embeddings=512 allows at most 512" in str(err.value)
    f.write_text(f"- {{model: {bundled_dir()}, max_length: 512}}\n")
    assert make_plans(models_file=f, device="cpu").plans[0].max_length == 512


@pytest.mark.parametrize("config,limit", [
    ({"model_type": "bert", "max_position_embeddings": 8192}, 8192),
    ({"model_type": "xlm-roberta", "max_position_embeddings": 8194, "pad_token_id": 1}, 8192),
    ({"model_type": "qwen3"}, None),
])
def test_position_limit(config, limit):
    from exporter.models import position_limit

    assert position_limit(config) == limit


# -- plan on a hub id: config files only ------------------------------------------------------------------------------

def fake_hub_cache(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face hub cache (HF_HUB_CACHE layout: refs/main -> snapshots/<commit>/...) holding ``files``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    for name, data in files.items():
        path = root / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root / "snapshots" / commit


def test_plan_on_a_hub_id_reads_only_config_files_and_build_names_the_missing_weights(tmp_path, monkeypatch):
    """Offline, with a cache that holds only the small config files of a model stored in float16: plan reads
    them (native dtype decides fp16); resolving the model for a build fails, naming the missing weights."""
    from exporter.models import CONFIG_FILES
    from exporter.plan import make_plans

    from export_helpers import bundled_dir

    files = {name: (bundled_dir() / name).read_bytes() for name in CONFIG_FILES if (bundled_dir() / name).is_file()}
    config = json.loads(files["config.json"])
    files["config.json"] = json.dumps({**config, "torch_dtype": "float16"}).encode()
    snapshot = fake_hub_cache(tmp_path / "hub", "fake-org/tiny-fp16", files)
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_CACHE when it is imported (already done here); the CLI test below sets the variable
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    plans = make_plans(["fake-org/tiny-fp16"], device="cpu", weights=False)
    [plan] = plans.plans
    assert (plan.native_dtype, plan.precision, plan.decided_by) == ("float16", "fp16", "native")
    assert plans.model_dir("fake-org/tiny-fp16") == snapshot
    assert not list(snapshot.glob("*.safetensors"))

    built = make_plans(["fake-org/tiny-fp16"], device="cpu")  # what export and build resolve
    with pytest.raises(ModelError) as err:
        built.model_dir("fake-org/tiny-fp16")
    assert "model.safetensors is missing" in str(err.value) and "only part of 'fake-org/tiny-fp16'" in str(err.value)


def test_plan_cli_on_a_hub_id_offline_with_config_files_only(tmp_path):
    import os
    import subprocess
    import sys

    from export_helpers import bundled_dir

    files = {"config.json": (bundled_dir() / "config.json").read_bytes(),
             "modules.json": (bundled_dir() / "modules.json").read_bytes()}
    fake_hub_cache(tmp_path / "hub", "fake-org/mini", files)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-m", "exporter", "plan", "--model", "fake-org/mini", "--device", "cpu",
                          "--json"], cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    [entry] = json.loads(out.stdout)
    assert (entry["model"], entry["precision"], entry["native_dtype"]) == ("fake-org/mini", "fp32", None)
    assert "native dtype unknown" not in out.stderr  # the config was found, not an unavailable model

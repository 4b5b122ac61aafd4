"""Model lists, repository names and model-directory resolution (offline)."""

import json

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

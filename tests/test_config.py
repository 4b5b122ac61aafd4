"""Config.from_env: every variable, its defaults, and every invalid value's message."""

import json

import pytest

from exporter.config import Config
from exporter.errors import ConfigError


def test_defaults_when_nothing_is_set():
    c = Config.from_env({})
    assert (c.model_precision, c.enable_quantization, c.quantization_method) == ("auto", False, "int8")
    assert (c.enable_gpu_memory_optimization, dict(c.model_precision_overrides)) == (False, {})
    assert (c.log_level, c.device, c.explicit) == ("INFO", "auto", frozenset())


def test_reads_every_variable():
    c = Config.from_env({
        "EMB_PROVIDER_MODEL_PRECISION": "FP16",
        "EMB_PROVIDER_ENABLE_QUANTIZATION": "Yes",
        "EMB_PROVIDER_QUANTIZATION_METHOD": "int4",
        "EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION": "on",
        "EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": '{"a/b": "int8", "small-models": "Auto"}',
        "EMB_PROVIDER_LOG_LEVEL": "debug",
        "EMB_PROVIDER_DEVICE": "cuda:7.5",
    })
    assert c.model_precision == "fp16" and c.enable_quantization and c.quantization_method == "int4"
    assert c.enable_gpu_memory_optimization and c.log_level == "DEBUG" and c.device == "cuda:7.5"
    assert dict(c.model_precision_overrides) == {"a/b": "int8", "small-models": "auto"}


@pytest.mark.parametrize("raw,expected", [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("On", True),
    ("false", False), ("False", False), ("0", False), ("NO", False), ("off", False),
])
def test_boolean_spellings(raw, expected):
    assert Config.from_env({"EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION": raw}).enable_gpu_memory_optimization \
        is expected


@pytest.mark.parametrize("var,value,fragments", [
    ("EMB_PROVIDER_MODEL_PRECISION", "fp8", ["EMB_PROVIDER_MODEL_PRECISION", "'fp8'", "auto, fp32, fp16, bf16"]),
    ("EMB_PROVIDER_ENABLE_QUANTIZATION", "maybe", ["EMB_PROVIDER_ENABLE_QUANTIZATION", "'maybe'", "yes/no"]),
    ("EMB_PROVIDER_QUANTIZATION_METHOD", "int2", ["EMB_PROVIDER_QUANTIZATION_METHOD", "'int2'", "int4, int8"]),
    ("EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION", "2", ["EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION", "'2'"]),
    ("EMB_PROVIDER_LOG_LEVEL", "TRACE", ["EMB_PROVIDER_LOG_LEVEL", "'TRACE'", "DEBUG, INFO, WARNING, ERROR"]),
    ("EMB_PROVIDER_DEVICE", "tpu", ["EMB_PROVIDER_DEVICE", "'tpu'", "cuda:<major>.<minor>"]),
    ("EMB_PROVIDER_DEVICE", "cuda:99.0", ["EMB_PROVIDER_DEVICE", "99.0", "capability"]),
    ("EMB_PROVIDER_MODEL_PRECISION_OVERRIDES", '{"a": fp16}', ["EMB_PROVIDER_MODEL_PRECISION_OVERRIDES",
                                                               "not valid JSON", "column 7"]),
    ("EMB_PROVIDER_MODEL_PRECISION_OVERRIDES", '["fp16"]', ["must be a JSON object", "list"]),
    ("EMB_PROVIDER_MODEL_PRECISION_OVERRIDES", '{"a": 16}', ["'a'", "16", "must be a string"]),
    ("EMB_PROVIDER_MODEL_PRECISION_OVERRIDES", '{"a": "half"}', ["['a']", "'half'", "allowed: auto, fp32"]),
    ("EMB_PROVIDER_MODEL_PRECISION_OVERRIDES", '{"": "fp16"}', ["empty model key"]),
])
def test_invalid_values_name_variable_value_and_allowed(var, value, fragments):
    with pytest.raises(ConfigError) as err:
        Config.from_env({var: value})
    for fragment in fragments:
        assert fragment in str(err.value)


def test_explicit_false_quantization_contradicts_int8_global():
    with pytest.raises(ConfigError) as err:
        Config.from_env({"EMB_PROVIDER_ENABLE_QUANTIZATION": "false", "EMB_PROVIDER_MODEL_PRECISION": "int8"})
    assert "EMB_PROVIDER_ENABLE_QUANTIZATION" in str(err.value) and "EMB_PROVIDER_MODEL_PRECISION" in str(err.value)


def test_explicit_false_quantization_contradicts_int4_override():
    env = {"EMB_PROVIDER_ENABLE_QUANTIZATION": "0",
           "EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": json.dumps({"m": "int4"})}
    with pytest.raises(ConfigError, match=r"MODEL_PRECISION_OVERRIDES\['m'\]=int4"):
        Config.from_env(env)


def test_unset_quantization_allows_explicit_int8():
    assert Config.from_env({"EMB_PROVIDER_MODEL_PRECISION": "int8"}).model_precision == "int8"


def test_cli_flags_override_environment():
    c = Config.from_env({"EMB_PROVIDER_MODEL_PRECISION": "fp16", "EMB_PROVIDER_DEVICE": "cpu"})
    c2 = c.with_overrides(model_precision="fp32", device=None, log_level="DEBUG")
    assert (c2.model_precision, c2.device, c2.log_level) == ("fp32", "cpu", "DEBUG")
    assert c.model_precision == "fp16"  # the original is unchanged


def test_empty_values_mean_unset():
    assert Config.from_env({"EMB_PROVIDER_MODEL_PRECISION": " ", "EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": ""}) \
        == Config.from_env({})


def test_guide_import_path():
    from emb_model_provider.core.config import Config as GuideConfig

    config = GuideConfig.from_env({"EMB_PROVIDER_MODEL_PRECISION": "fp16"})
    assert GuideConfig is Config and config.model_precision == "fp16"
    assert dict(config.model_precision_overrides) == {}


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("EMB_PROVIDER_MODEL_PRECISION", "bf16")
    assert Config.from_env().model_precision == "bf16"

"""gateway.settings: flags over EMB_PROVIDER_GATEWAY_* over defaults; keys only from the named variable; clear
errors for bad values."""

from __future__ import annotations

import pytest

from gateway.__main__ import settings_from
from gateway.settings import GatewaySettings, SettingsError


def test_defaults_bind_loopback_without_keys_cors_or_metrics():
    s = GatewaySettings.resolve({}, env={})
    assert (s.host, s.port, s.api_keys, s.cors_origins, s.metrics) == ("127.0.0.1", 8080, (), (), False)
    assert not s.exposed


def test_flags_win_over_environment_and_environment_over_defaults():
    env = {"EMB_PROVIDER_TRITON_URL": "triton:8000", "EMB_PROVIDER_GATEWAY_PORT": "9000",
           "EMB_PROVIDER_GATEWAY_MAX_IN_FLIGHT": "3", "EMB_PROVIDER_GATEWAY_METRICS": "true",
           "EMB_PROVIDER_GATEWAY_CORS_ORIGINS": "https://a.example, https://b.example"}
    s = GatewaySettings.resolve({"port": 7000, "timeout": 2.5}, env=env)
    assert (s.triton_url, s.port, s.max_in_flight, s.timeout, s.metrics) == ("triton:8000", 7000, 3, 2.5, True)
    assert s.cors_origins == ("https://a.example", "https://b.example")


def test_command_line_flags_parse_into_settings(monkeypatch):
    monkeypatch.setenv("MY_KEYS", "k1,k2")
    s = settings_from(["--triton-url", "h:1", "--host", "0.0.0.0", "--port", "0", "--api-key-env", "MY_KEYS",
                       "--max-texts", "5", "--cors-origins", "https://x.example", "--metrics"])
    assert (s.triton_url, s.host, s.port, s.max_texts, s.metrics) == ("h:1", "0.0.0.0", 0, 5, True)
    assert s.api_keys == ("k1", "k2") and s.cors_origins == ("https://x.example",) and s.exposed


def test_keys_come_from_the_named_variable_and_never_show_in_repr():
    s = GatewaySettings.resolve({"api_key_env": "KEYS"}, env={"KEYS": " secret-1 , secret-2 "})
    assert s.api_keys == ("secret-1", "secret-2")
    assert "secret" not in repr(s)
    assert GatewaySettings.resolve({}, env={"EMB_PROVIDER_API_KEYS": "  "}).api_keys == ()


@pytest.mark.parametrize(("env", "named"), [
    ({"EMB_PROVIDER_GATEWAY_PORT": "eighty"}, "EMB_PROVIDER_GATEWAY_PORT='eighty': expected an integer"),
    ({"EMB_PROVIDER_GATEWAY_PORT": "70000"}, "port 70000: allowed 0-65535"),
    ({"EMB_PROVIDER_GATEWAY_MAX_IN_FLIGHT": "0"}, "max-in-flight=0: expected an integer >= 1"),
    ({"EMB_PROVIDER_GATEWAY_TIMEOUT": "-1"}, "timeout=-1.0: expected seconds > 0"),
    ({"EMB_PROVIDER_GATEWAY_METRICS": "maybe"}, "EMB_PROVIDER_GATEWAY_METRICS='maybe': expected true or false"),
    ({"EMB_PROVIDER_API_KEYS": "a,,b"}, "$EMB_PROVIDER_API_KEYS holds an empty key"),
    ({"EMB_PROVIDER_TRITON_URL": "bad url"}, "triton URL 'bad url'"),
])
def test_bad_values_are_refused_naming_the_value_and_what_is_allowed(env, named):
    with pytest.raises(SettingsError, match=None) as error:
        GatewaySettings.resolve({}, env=env)
    assert named in str(error.value)


@pytest.mark.parametrize(("host", "exposed"), [("127.0.0.1", False), ("::1", False), ("localhost", False),
                                                ("0.0.0.0", True), ("10.1.2.3", True), ("gateway.lan", True)])
def test_exposed_means_reachable_from_other_hosts(host, exposed):
    assert GatewaySettings(host=host).exposed is exposed


def test_several_triton_replicas_by_repeated_flag_or_commas():
    assert settings_from(["--triton-url", "a:1", "--triton-url", "b:2"]).triton_url == "a:1,b:2"
    assert GatewaySettings.resolve({}, {"EMB_PROVIDER_TRITON_URL": "a:1, b:2"}).triton_url == "a:1, b:2"
    with pytest.raises(SettingsError, match="several separated by commas"):
        settings_from(["--triton-url", "a:1", "--triton-url", "a:1"])

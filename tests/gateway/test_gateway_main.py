"""``python -m gateway``: bad settings exit 2 naming the value; binding beyond loopback without keys warns; the
settings reach uvicorn. (uvicorn.run is replaced by a recorder: the real server runs in the e2e tests.)"""

from __future__ import annotations

import logging

import pytest

from gateway import __main__ as cli


@pytest.fixture
def served(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.delenv("EMB_PROVIDER_API_KEYS", raising=False)
    return calls


def test_bad_setting_exits_2_naming_it(served, capsys):
    assert cli.main(["--max-texts", "0"]) == 2
    assert "max-texts=0: expected an integer >= 1" in capsys.readouterr().err
    assert served == []


def test_exposed_without_keys_warns_and_runs(served, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert cli.main(["--host", "0.0.0.0", "--port", "0", "--triton-url", "t:8000"]) == 0
    assert any("0.0.0.0" in r.message and "without authentication" in r.message for r in caplog.records)
    (app, kwargs), = served
    assert (kwargs["host"], kwargs["port"]) == ("0.0.0.0", 0) and app.state.gateway.settings.triton_url == "t:8000"


def test_loopback_or_keys_do_not_warn(served, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="gateway"):
        cli.main(["--port", "0"])
        monkeypatch.setenv("EMB_PROVIDER_API_KEYS", "k")
        cli.main(["--host", "0.0.0.0", "--port", "0"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert served[1][0].state.gateway.settings.api_keys == ("k",)

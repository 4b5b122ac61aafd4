"""The one place the client imports ``tritonclient`` (and the HTTP stack its ``[http]`` extra installs).

The client is useless without it, but it can be missing: an app installed with ``--no-deps``, or a requirements
file that lists ``tritonclient`` without its ``[http]`` extra (then ``geventhttpclient`` / ``aiohttp`` are
absent). Python's error names a module three imports deep, and tritonclient turns a missing extra into a
RuntimeError; this one names the missing package, says what needs it and gives the ``pip install`` that fixes it.
"""

from __future__ import annotations

PIP_INSTALL = 'pip install "tritonclient[http]"'


def missing_package(module: str | None) -> str:
    """The package to name for a missing ``module``: its top level (``tritonclient`` for ``tritonclient.http``)."""
    return (module or "tritonclient").split(".")[0]


def missing_message(package: str) -> str:
    """What to tell a user whose environment lacks ``package`` (tritonclient or a part of its ``[http]`` extra)."""
    return (f"the emb-provider client needs the 'tritonclient' package with its HTTP extra, but module "
            f"{package!r} is missing; install it with: {PIP_INSTALL}")


try:
    import aiohttp
    import tritonclient.http as httpclient
    import tritonclient.http.aio as aioclient
    from tritonclient._plugin import InferenceServerClientPlugin
    from tritonclient.utils import InferenceServerException
except (ModuleNotFoundError, RuntimeError) as exc:
    # tritonclient.http re-raises a missing extra as RuntimeError("... does not include http support") from it
    _cause = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
    if not isinstance(_cause, ModuleNotFoundError):
        raise
    _missing = missing_package(_cause.name)
    raise ModuleNotFoundError(missing_message(_missing), name=_missing) from None

__all__ = ["PIP_INSTALL", "InferenceServerClientPlugin", "InferenceServerException", "aioclient", "aiohttp",
           "httpclient", "missing_message", "missing_package"]

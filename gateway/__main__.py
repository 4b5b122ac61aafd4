"""``python -m gateway``: serve the OpenAI-compatible API in front of a Triton server, until SIGINT/SIGTERM.

Every flag can also come from the environment (``EMB_PROVIDER_GATEWAY_<FLAG>``, e.g. ``..._PORT=8080``; the Triton
URL from ``EMB_PROVIDER_TRITON_URL``); a flag wins over its variable. API keys come only from the variable that
``--api-key-env`` names (default ``EMB_PROVIDER_API_KEYS``), comma-separated, so they never show in a process list.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .settings import DEFAULT_API_KEY_ENV, ENV_PREFIX, LOG_LEVELS, GatewaySettings, SettingsError, parse

log = logging.getLogger("gateway")


def parser() -> argparse.ArgumentParser:
    d = GatewaySettings()
    p = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n\n")[0].strip("`"),
                                epilog=f"Each flag falls back to {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}PORT).")
    p.add_argument("--triton-url", metavar="HOST:PORT", action="append",
                   help=f"Triton's HTTP endpoint; repeat it (or separate with commas) for several replicas, which the "
                        f"client spreads requests over with failover (env EMB_PROVIDER_TRITON_URL; default "
                        f"{d.triton_url})")
    p.add_argument("--host", help=f"address to bind (default {d.host}; anything else exposes the API: set keys)")
    p.add_argument("--port", type=int, help=f"port (default {d.port}; 0 picks a free one)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help=f"environment variable holding the accepted API keys, comma-separated (default "
                        f"{DEFAULT_API_KEY_ENV}); unset or empty: no authentication")
    p.add_argument("--max-body-bytes", type=int, metavar="N", help=f"largest request body (default {d.max_body_bytes})")
    p.add_argument("--max-texts", type=int, metavar="N", help=f"most texts per request (default {d.max_texts})")
    p.add_argument("--max-in-flight", type=int, metavar="N",
                   help=f"most requests served at once; more get 429 at once (default {d.max_in_flight})")
    p.add_argument("--timeout", type=float, metavar="S",
                   help=f"seconds one request may take before it gets 504 (default {d.timeout:g})")
    p.add_argument("--cors-origins", metavar="ORIGINS",
                   help="comma-separated origins allowed to call from a browser (default: none, no CORS)")
    p.add_argument("--metrics", action="store_const", const=True, help="serve Prometheus metrics on /metrics")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="default INFO")
    return p


def settings_from(argv: list[str] | None = None) -> GatewaySettings:
    args = vars(parser().parse_args(argv))
    if args["triton_url"]:
        args["triton_url"] = ",".join(args["triton_url"])
    if args["cors_origins"] is not None:
        args["cors_origins"] = parse("cors_origins", tuple, args["cors_origins"])
    return GatewaySettings.resolve(args)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.exposed and not settings.api_keys:
        log.warning("binding %s exposes the API to other hosts without authentication: set keys in $%s",
                    settings.host, settings.api_key_env)
    log.info("gateway for Triton at %s on http://%s:%s (%d API key(s), at most %d requests in flight)",
             settings.triton_url, settings.host, settings.port, len(settings.api_keys), settings.max_in_flight)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=settings.log_level == "DEBUG", timeout_graceful_shutdown=int(settings.timeout) + 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

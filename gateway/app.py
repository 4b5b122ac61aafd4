"""The ASGI app: OpenAI's ``/v1/embeddings`` and ``/v1/models`` over the project's async client, plus ``/health``
(the process answers), ``/ready`` (Triton is ready, every model loaded) and, with ``--metrics``, ``/metrics``.

All Triton work goes through one :class:`client.AsyncEmbeddingClient` made when the app starts and closed when it
stops: batching to the model's ``max_batch_size``, the serving contract, token counts and the error types are the
client's. The app adds only HTTP: auth, limits, the wire format, the error shape, and a deadline per request.
Retries are the caller's (the openai SDKs retry 429/5xx honouring ``Retry-After``), so the client here tries once:
two layers of retries would multiply the wait behind an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from client import AsyncEmbeddingClient, EmbeddingError, Retry, Timeouts

from .auth import check_key
from .errors import SERVER_ERROR, GatewayError, bad_request, from_client_error, timed_out, unavailable
from .limits import InFlight, check_texts, read_body
from .metrics import NO_MODEL, Metrics
from .schemas import embedding_response, model_entry, parse_request
from .settings import GatewaySettings

log = logging.getLogger("gateway")

T = TypeVar("T")
JSON = "application/json"


@dataclass
class Outcome:
    """What a ``/v1`` request's metrics record: its status, and the served model it reached (else ``-``)."""

    status: int = 200
    model: str = NO_MODEL


class Gateway:
    """The app's state and handlers: settings, the client (while the app runs), limits and metrics."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.in_flight = InFlight(settings.max_in_flight, settings.retry_after)
        self.metrics = Metrics() if settings.metrics else None
        self.served: set[str] = set()  # model names that answered: the only values the metrics' label takes
        self._client: AsyncEmbeddingClient | None = None

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        s = self.settings
        # The client's own request timeout is a backstop behind the gateway's deadline (asyncio.wait_for below),
        # which is what decides, so that a hung Triton always gives 504 after exactly ``timeout`` seconds.
        self._client = AsyncEmbeddingClient(s.triton_url, max_concurrency=s.max_in_flight,
                                            timeouts=Timeouts(request=s.timeout + 5.0), retry=Retry(attempts=1))
        try:
            if not await self._ready(min(s.timeout, 2.0)):  # a hint in the log; never holds up the start
                log.warning("Triton at %s is not ready yet: /ready answers 503 until it is", s.triton_url)
            yield
        finally:
            await self._client.close()

    @property
    def client(self) -> AsyncEmbeddingClient:
        if self._client is None:
            raise RuntimeError("the gateway app is not running (its lifespan has not started)")
        return self._client

    # -- routes -------------------------------------------------------------------------------------------------

    def api_route(self, route: str, handler: Callable[[Request, Outcome], Awaitable[Response]]
                  ) -> Callable[[Request], Awaitable[Response]]:
        """A ``/v1`` endpoint: the API key is checked first, a :class:`GatewayError` becomes its OpenAI-shaped
        response, and every request is counted (route, model, status) and timed."""

        async def endpoint(request: Request) -> Response:
            started, outcome = time.perf_counter(), Outcome()
            try:
                check_key(request.headers.get("authorization"), self.settings.api_keys)
                return await handler(request, outcome)
            except GatewayError as exc:
                outcome.status = exc.status
                return self._failed(exc, request)
            finally:
                if self.metrics is not None:
                    self.metrics.observe(route, outcome.model, outcome.status, time.perf_counter() - started)

        return endpoint

    async def embeddings(self, request: Request, outcome: Outcome) -> Response:
        with self.in_flight:
            body = await read_body(request.headers.get("content-length"), request.stream(),
                                   self.settings.max_body_bytes)
            req = parse_request(body)
            texts = req.texts
            check_texts(len(texts), self.settings.max_texts)
            if req.model in self.served:
                outcome.model = req.model
            result = await self._call(self.client.embed_with_usage(
                texts, model=req.model, prompt_name=req.prompt_name, dimensions=req.dimensions))
            outcome.model = req.model
            self.served.add(req.model)
            payload = embedding_response(result.vectors, req.model, result.total_tokens, req.encoding_format)
        if self.metrics is not None:
            self.metrics.embedded(req.model, len(texts), result.total_tokens)
        return Response(payload, media_type=JSON)

    async def models(self, _request: Request, _outcome: Outcome) -> Response:
        infos = await self._call(self.client.models())
        self.served.update(info.name for info in infos)
        return JSONResponse({"object": "list", "data": [model_entry(info) for info in infos]})

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if await self._ready(self.settings.timeout):
            return JSONResponse({"status": "ready"})
        return self._failed(unavailable(f"Triton at {self.settings.triton_url} is not ready (or a model is not "
                                        "loaded)", self.settings.retry_after), request)

    async def metrics_text(self, _request: Request) -> Response:
        assert self.metrics is not None  # the route exists only with --metrics
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    # -- helpers ------------------------------------------------------------------------------------------------

    async def _ready(self, within: float) -> bool:
        """Triton ready with every model loaded, answered ``within`` seconds (a hung Triton is not ready)."""
        try:
            return await asyncio.wait_for(self.client.is_ready(), within)
        except asyncio.TimeoutError:
            return False

    async def _call(self, call: Awaitable[T]) -> T:
        """Await a client call under the gateway's deadline, turning the client's errors into HTTP ones."""
        try:
            return await asyncio.wait_for(call, self.settings.timeout)
        except asyncio.TimeoutError:
            raise timed_out(self.settings.timeout, self.settings.retry_after) from None
        except EmbeddingError as exc:
            raise from_client_error(exc, self.settings.retry_after) from None
        except ValueError as exc:  # an argument the client refused before any request (e.g. dimensions)
            raise bad_request(str(exc)) from None

    def _failed(self, error: GatewayError, request: Request) -> Response:
        level = logging.WARNING if error.status >= 500 else logging.DEBUG
        log.log(level, "%s %s -> %d: %s", request.method, request.url.path, error.status, error.message)
        return error.response()


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (wrong method), in OpenAI's error shape."""
    assert isinstance(exc, HTTPException)
    return GatewayError(exc.status_code, str(exc.detail)).response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return GatewayError(500, f"internal error: {type(exc).__name__}", type=SERVER_ERROR).response()


def create_app(settings: GatewaySettings) -> Starlette:
    """The gateway as an ASGI app (uvicorn runs it; ``python -m gateway`` does that)."""
    gateway = Gateway(settings)
    routes = [Route("/v1/embeddings", gateway.api_route("/v1/embeddings", gateway.embeddings), methods=["POST"]),
              Route("/v1/models", gateway.api_route("/v1/models", gateway.models), methods=["GET"]),
              Route("/health", gateway.health, methods=["GET"]),
              Route("/ready", gateway.ready, methods=["GET"])]
    if settings.metrics:
        routes.append(Route("/metrics", gateway.metrics_text, methods=["GET"]))
    middleware = []
    if settings.cors_origins:  # none unless configured: browsers on other origins cannot call the API
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    handlers: dict[type[Exception], Callable] = {HTTPException: _http_error, Exception: _unexpected}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=gateway.lifespan)
    app.state.gateway = gateway
    return app

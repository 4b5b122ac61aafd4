# The OpenAI-compatible gateway (python -m gateway): the thin client and the ASGI stack, no export toolchain.
# docker-compose.yml runs it next to Triton; on its own:
#   docker build -f docker/gateway.Dockerfile -t emb-provider-gateway .
#   docker run -p 127.0.0.1:8080:8080 -e EMB_PROVIDER_TRITON_URL=HOST:8000 -e EMB_PROVIDER_API_KEYS=... emb-provider-gateway
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

WORKDIR /app
COPY pyproject.toml README.md ./
COPY client ./client
COPY gateway ./gateway
RUN python -m pip install --no-cache-dir ".[gateway]" && useradd --system --no-create-home gateway
USER gateway

# Inside the container the gateway must listen on all interfaces for the published port to reach it; publish
# it on 127.0.0.1 (as docker-compose.yml does) or set API keys in EMB_PROVIDER_API_KEYS.
ENV EMB_PROVIDER_GATEWAY_HOST=0.0.0.0 EMB_PROVIDER_GATEWAY_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=4)"]
CMD ["python", "-m", "gateway"]

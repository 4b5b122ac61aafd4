"""``make demo``: the main job end to end on the bundled model, in well under two minutes on a laptop-class CPU.

plan -> build ./model_repository (export + quality gate + Triton configs) -> a real local Triton on free ports ->
embed a few sentences with the project's client (client.EmbeddingClient) -> print their cosine-similarity matrix ->
one call through the official openai SDK to the OpenAI-compatible gateway (python -m gateway) in front of that
Triton -> stop both (whole process groups). Exit code 0 only when every step worked.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub, which reads it once

import numpy as np  # noqa: E402

from client import EmbeddingClient  # noqa: E402
from exporter.cli import main as exporter_main  # noqa: E402
from exporter.serve import ServerSettings, TritonServer  # noqa: E402
from gateway.process import GatewayProcess  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays the guitar on stage.",
    "A woman is slicing an onion.",
    "Onions are being chopped in a kitchen.",
    "The stock market fell sharply today.",
]


def step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def print_matrix(texts: list[str], vectors: np.ndarray) -> None:
    similarity = vectors @ vectors.T  # the served vectors are L2-normalized: dot product = cosine
    labels = [f"[{i}]" for i in range(len(texts))]
    for label, text in zip(labels, texts):
        print(f"  {label} {text}")
    print("      " + "".join(f"{label:>7}" for label in labels))
    for label, row in zip(labels, similarity):
        print(f"  {label:<4}" + "".join(f"{value:7.3f}" for value in row))


def call_through_openai(triton_url: str, model: str, expected: np.ndarray) -> None:
    """One ``embeddings.create`` through the gateway; its vectors must be the client's (same server, same batch)."""
    import openai

    with GatewayProcess(triton_url) as gateway, openai.OpenAI(base_url=gateway.url, api_key="unused") as sdk:
        print(f"   gateway at {gateway.url} (no API key set: it accepts any)")
        response = sdk.embeddings.create(model=model, input=SENTENCES)
        got = np.asarray([d.embedding for d in response.data], dtype=np.float32)
        print(f"   openai.OpenAI(base_url={gateway.url!r}).embeddings.create(model={model!r}, input=[...5 texts]) "
              f"-> {len(response.data)} vectors of dim {got.shape[1]}, usage {response.usage.total_tokens} tokens, "
              f"max |difference| to the client's vectors {np.abs(got - expected).max():.1e}")
        if not np.allclose(got, expected, atol=1e-6):
            raise SystemExit("error: the gateway's vectors differ from the client's")


def main() -> int:
    started = time.perf_counter()
    step("plan: which precision for this host, and for a GPU server (cuda:8.0), and why")
    for device in ("auto", "cuda:8.0"):
        if exporter_main(["plan", "--device", device]) != 0:
            return 1
    t = step(f"build: export + quality gate + Triton repository -> {REPOSITORY}")
    if exporter_main(["build", "--repository", str(REPOSITORY)]) != 0:
        return 1
    print(f"   ({time.perf_counter() - t:.1f} s)")
    t = step("serve: a real Triton server on free local ports")
    with TritonServer(ServerSettings(REPOSITORY, http_port=0, grpc_port=0, metrics_port=0)) as server:
        model = server.models[0]
        print(f"   ready in {time.perf_counter() - t:.1f} s: HTTP {server.http_url}, gRPC {server.grpc_url}, "
              f"model {model!r}")
        step(f"embed {len(SENTENCES)} sentences with client.EmbeddingClient (TEXT -> EMBEDDING) and compare them")
        with EmbeddingClient(server.http_url, model=model) as client:
            print(f"   serving: {client.models()}")
            vectors = client.embed(SENTENCES)
        print(f"   {vectors.shape[0]} vectors of dim {vectors.shape[1]}; cosine similarity:")
        print_matrix(SENTENCES, vectors)
        step("the OpenAI-compatible gateway (python -m gateway), called with the official openai SDK")
        call_through_openai(server.http_url, model, vectors)
        step("stop the gateway and the server")
    print(f"   stopped. Demo finished in {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

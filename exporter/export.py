"""The encoder graph: Hugging Face ``AutoModel`` + the model's own sentence-transformers modules, as one module.

Exporters usually drop pooling (optimum issues #1145, #1519), so the served vector would differ from what
sentence-transformers gives. We read ``modules.json`` and each module's own config (``1_Pooling/config.json``,
``Dense``, ``Normalize``) and build one :class:`~exporter.triton.runtime.torch_encoder.SentenceEncoder`: token ids in,
the final sentence vector out. The ONNX routes export it with ``torch.onnx.export``; the torch routes save its
weights and the metadata (:func:`encoder_metadata`) their runtime loader rebuilds it from.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import ModelError
from .models import check_max_length, check_model_dir, needs_remote_code, pooling_mode_name, position_limit
from .triton.runtime.torch_encoder import POOLING_MODES, SentenceEncoder, activation, dense_layer, model_class

log = logging.getLogger(__name__)

OPSET = 17
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json")
# sentence-transformers Pooling config keys, in the order it concatenates them when several are on
_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_MODULE_KINDS = ("Transformer", "Pooling", "Dense", "Normalize")


@dataclass(frozen=True)
class EncoderSpec:
    """What the model's sentence-transformers files say the encoder is (read once, shared by every route)."""

    model_dir: Path
    transformer_dir: Path
    pooling: tuple[str, ...]
    dense: tuple[dict[str, Any], ...] = ()
    dense_dirs: tuple[Path, ...] = ()
    normalize: bool = True
    max_seq_length: int = 512
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    sentence_transformers: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    # config_sentence_transformers.json's prompts (name -> prefix) and default prompt name: served by the tokenizer
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    token_width: int = 0  # the Pooling config's embedding dimension; 0: the transformer config's hidden width
    pooling_override: bool = False  # ``pooling`` comes from the models file, not the model's Pooling module

    @property
    def remote_code(self) -> bool:
        """The architecture is the model's own Python code (config.json ``auto_map``)."""
        return needs_remote_code(self.config)

    @property
    def dim(self) -> int:
        """Width of the output vector (the last Dense layer's, else token width x pooling modes)."""
        if self.dense:
            return int(self.dense[-1]["out_features"])
        return (self.token_width or hidden_width(self.config, self.transformer_dir)) * len(self.pooling)


# config.json keys that hold the width of the token vectors, by architecture family (BERT, DistilBERT, T5/BART, GPT-2)
_WIDTH_KEYS = ("hidden_size", "dim", "d_model", "n_embd")


def hidden_width(config: dict[str, Any], where: Path | str = "config.json") -> int:
    """The transformer's token vector width, read under the key its own config uses."""
    for key in _WIDTH_KEYS:
        if isinstance(config.get(key), int):
            return int(config[key])
    raise ModelError(f"{where}: model_type {config.get('model_type')!r} names its hidden width under none of "
                     f"{', '.join(_WIDTH_KEYS)}; add a Pooling module whose config.json gives embedding_dimension")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path.parent} is not a complete sentence-transformers module: {path.name} is "
                         "missing") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None


def _pooling_modes(config: dict[str, Any], where: Path) -> tuple[str, ...]:
    named = config.get("pooling_mode")  # sentence-transformers >= 5: one mode or a list of them
    if named:
        names = [named] if isinstance(named, str) else list(named)
        modes = [pooling_mode_name(str(m)) for m in names]
    else:
        modes = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
    bad = [m for m in modes if m not in POOLING_MODES]
    if not modes or bad:
        raise ModelError(f"{where}: pooling {bad or 'none'} is not supported; allowed: {', '.join(POOLING_MODES)}")
    if config.get("include_prompt") is False:
        raise ModelError(f"{where}: include_prompt=false is not supported (the graph cannot know the prompt length)")
    return tuple(modes)


def _dense_config(where: Path) -> dict[str, Any]:
    """A Dense module's config, its activation checked now so that a bad one is named before any export work."""
    config = _read_json(where)
    try:
        activation(config.get("activation_function"))
    except ValueError as exc:
        raise ModelError(f"{where}: {exc}") from None
    return config


def read_encoder_spec(model_dir: Path, max_length: int | None = None,
                      pooling: tuple[str, ...] | None = None) -> EncoderSpec:
    """Parse ``modules.json`` and the module configs; a plain HF model gets mean pooling + normalize (WARNING).

    ``max_length`` (checked against the position table) and ``pooling`` (modes concatenated in the order given)
    replace what the model's files say: a models file's per-model settings.
    """
    model_dir, override = Path(model_dir), pooling
    modules_file = model_dir / "modules.json"
    transformer_dir, pooling, normalize, token_width = model_dir, ("mean",), True, 0
    dense: list[dict[str, Any]] = []
    dense_dirs: list[Path] = []
    is_st = modules_file.is_file()
    if not is_st:
        log.warning("%s has no modules.json (not a sentence-transformers model): using mean pooling + L2 "
                    "normalize", model_dir)
    else:
        modules: Any = _read_json(modules_file)
        normalize, pooling = False, ()
        for entry in modules:
            kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
            path = model_dir / entry.get("path", "")
            if kind == "Transformer":
                transformer_dir = path
            elif kind == "Pooling":
                pooling_config = _read_json(path / "config.json")
                pooling = _pooling_modes(pooling_config, path / "config.json")
                token_width = int(pooling_config.get("embedding_dimension")
                                  or pooling_config.get("word_embedding_dimension") or 0)
            elif kind == "Dense":
                dense.append(_dense_config(path / "config.json"))
                dense_dirs.append(path)
            elif kind == "Normalize":
                normalize = True
            else:
                raise ModelError(f"{modules_file}: module type {entry.get('type')!r} is not supported; "
                                 f"allowed: {', '.join(_MODULE_KINDS)}")
        if not pooling:
            raise ModelError(f"{modules_file} lists no Pooling module; the encoder needs one")
    check_model_dir(transformer_dir)
    config = _read_json(transformer_dir / "config.json")
    _check_architecture(transformer_dir, config)
    prompts, default_prompt_name = read_prompts(model_dir)
    check_max_length(str(model_dir), max_length, config)
    overridden = override is not None and tuple(override) != pooling
    if overridden:
        width = (token_width or hidden_width(config, transformer_dir)) * len(override)
        if dense and int(dense[0]["in_features"]) != width:
            raise ModelError(f"{model_dir}: pooling {list(override)} gives {width} features but the first Dense "
                             f"module takes in_features={dense[0]['in_features']}; choose modes that match it")
        pooling = tuple(override)
    return EncoderSpec(
        model_dir=model_dir, transformer_dir=transformer_dir, pooling=pooling, dense=tuple(dense),
        dense_dirs=tuple(dense_dirs), normalize=normalize,
        max_seq_length=max_length or _model_max_length(transformer_dir, config),
        inputs=_input_names(transformer_dir, config), sentence_transformers=is_st, config=config,
        prompts=prompts, default_prompt_name=default_prompt_name, token_width=token_width,
        pooling_override=overridden)


def read_prompts(model_dir: Path) -> tuple[dict[str, str], str | None]:
    """``prompts`` and ``default_prompt_name`` from config_sentence_transformers.json (none without the file), checked
    as sentence-transformers checks them: the default must name one of the prompts."""
    path = Path(model_dir) / "config_sentence_transformers.json"
    if not path.is_file():
        return {}, None
    config = _read_json(path)
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None)))
                                                for k, v in prompts.items()):
        raise ModelError(f"{path}: prompts must map prompt names to prefix strings, got {prompts!r:.200}")
    prompts = {name: value or "" for name, value in prompts.items()}  # sentence-transformers reads null as ""
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ModelError(f"{path}: default_prompt_name {default!r} is not one of the prompts "
                         f"({', '.join(map(repr, prompts)) or 'none'})")
    return prompts, default


def _check_architecture(transformer_dir: Path, config: dict[str, Any]) -> None:
    """A model_type transformers does not know is named here, before tokenizer or weights are touched (models
    with custom code, ``auto_map`` in config.json, are left to the remote-code check)."""
    import transformers
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if "auto_map" not in config and model_type not in CONFIG_MAPPING:
        raise ModelError(f"{transformer_dir / 'config.json'}: model_type {model_type!r} is not an architecture "
                         f"transformers {transformers.__version__} knows, so it can be neither loaded nor exported")


def _model_max_length(transformer_dir: Path, config: dict[str, Any]) -> int:
    """sentence_bert_config.json's max_seq_length, else the tokenizer's, capped by the position table."""
    limit = position_limit(config) or 512
    st_config = transformer_dir / "sentence_bert_config.json"
    if st_config.is_file():
        value = _read_json(st_config).get("max_seq_length")
        if value:
            return min(int(value), limit)
    tok_config = transformer_dir / "tokenizer_config.json"
    value = _read_json(tok_config).get("model_max_length") if tok_config.is_file() else None
    return min(int(value), limit) if isinstance(value, (int, float)) and value < 1e6 else limit


def _input_names(transformer_dir: Path, config: dict[str, Any]) -> tuple[str, ...]:
    """input_ids, attention_mask, and token_type_ids when the tokenizer emits them and the model has a table."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(transformer_dir))
    names = set(tokenizer.model_input_names)
    if int(config.get("type_vocab_size") or 0) < 1:
        names.discard("token_type_ids")
    return tuple(n for n in INPUT_ORDER if n in names or n != "token_type_ids")


def encoder_metadata(spec: EncoderSpec, trust_remote_code: bool = False) -> dict[str, Any]:
    """The architecture part of ``encoder.json``: what the torch runtime loader needs to rebuild the module."""
    return {"config": spec.config, "pooling": list(spec.pooling),
            "dense": [dict(d) for d in spec.dense], "normalize": spec.normalize, "inputs": list(spec.inputs),
            "dim": spec.dim, "max_seq_length": spec.max_seq_length, "trust_remote_code": trust_remote_code}


def _load_dense_weights(layer: torch.nn.Module, directory: Path) -> None:
    """Dense weights from safetensors only: a pickle file (pytorch_model.bin) is never loaded."""
    from safetensors.torch import load_file

    st_file = directory / "model.safetensors"
    if not st_file.is_file():
        raise ModelError(f"{directory} is a Dense module without weights: model.safetensors is missing (pickle "
                         "files such as pytorch_model.bin are never loaded; convert them to safetensors)")
    state = load_file(str(st_file))
    layer[0].load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})


def load_encoder(spec: EncoderSpec, *, trust_remote_code: bool = False,
                 attn_implementation: str | None = "eager") -> SentenceEncoder:
    """The fp32 encoder with the model's weights (eager attention: the pattern ORT's fusions recognise)."""
    model_type = str(spec.config.get("model_type", ""))
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        transformer = model_class(model_type).from_pretrained(
            str(spec.transformer_dir), trust_remote_code=trust_remote_code, dtype=torch.float32,
            use_safetensors=True, **kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(f"{spec.model_dir} needs custom code; pass --trust-remote-code if you trust it") \
                from None
        raise
    dense = []
    for config, directory in zip(spec.dense, spec.dense_dirs):
        layer = dense_layer(config)
        _load_dense_weights(layer, directory)
        dense.append(layer)
    return SentenceEncoder(transformer, list(spec.pooling), dense, spec.normalize, list(spec.inputs)).eval()


def dummy_inputs(spec: EncoderSpec, batch: int = 2, seq: int = 8) -> tuple[torch.Tensor, ...]:
    """Example inputs for tracing, with padding in the second row so masking is part of the graph."""
    vocab = int(spec.config.get("vocab_size") or 2000)  # ids inside the model's own table (tiny models too)
    ids = torch.randint(vocab // 2, vocab, (batch, seq), dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[-1, seq // 2:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return tuple(feeds[name] for name in spec.inputs)


def export_onnx(encoder: SentenceEncoder, spec: EncoderSpec, path: Path, opset: int = OPSET) -> Path:
    """``torch.onnx.export`` (TorchScript exporter) with dynamic batch and sequence axes; one file, no
    external data (models here are < 2 GB; larger ones get ``model.onnx_data`` beside it)."""
    axes = {name: {0: "batch", 1: "sequence"} for name in spec.inputs}
    axes[OUTPUT_NAME] = {0: "batch"}
    with torch.inference_mode(), traceable_masks():
        torch.onnx.export(encoder, dummy_inputs(spec), str(path), input_names=list(spec.inputs),
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    _fix_output_width(path, spec.dim)
    return path


_TRACE_LOCK = threading.Lock()


@contextmanager
def traceable_masks() -> Iterator[None]:
    """Let the TorchScript tracer follow transformers' attention-mask builder.

    Decoder-style models (Qwen3, Gemma 3, ...) build their 4-D masks in ``transformers.masking_utils`` by
    ``torch.vmap``-ing an index predicate (causal, sliding window, bidirectional overlay, padding); the tracer
    cannot record vmap (``RuntimeError: unordered_map::at``). The predicates are elementwise, so calling them once
    on broadcast index grids gives the same boolean mask with ordinary tensor ops. Swapped in for the export only.
    """
    try:
        from transformers import masking_utils as mu
    except ImportError:  # older transformers: masks are built without vmap
        yield
        return
    if "cache_position" not in inspect.signature(mu.sdpa_mask).parameters:
        yield  # transformers >= 5 (q_length/q_offset signature) broadcasts the predicates itself unless told to vmap
        return

    def broadcast_mask(batch_size: int, cache_position: torch.Tensor, kv_length: int, kv_offset: int = 0,
                       mask_function: Any = None, attention_mask: torch.Tensor | None = None,
                       **_: Any) -> torch.Tensor:
        predicate = mask_function or mu.causal_mask_function
        padding = mu.prepare_padding_mask(attention_mask, kv_length, kv_offset, _slice=False)
        if padding is not None:
            predicate = mu.and_masks(predicate, mu.padding_mask_function(padding))
        device = cache_position.device
        kv = torch.arange(kv_length, device=device) + kv_offset
        mask = predicate(torch.arange(batch_size, device=device)[:, None, None, None],
                         torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device),
                         cache_position[None, None, :, None], kv[None, None, None, :])
        return mask.expand(batch_size, 1, cache_position.shape[0], kv_length)

    with _TRACE_LOCK:  # a module global is swapped: two exports in threads must not restore it under each other
        original = mu.sdpa_mask
        mu.sdpa_mask = broadcast_mask  # eager_mask looks it up by this module-level name
        try:
            yield
        finally:
            mu.sdpa_mask = original


def _fix_output_width(path: Path, dim: int) -> None:
    """Pin the output's second axis to ``dim`` (the tracer leaves it symbolic after normalisation), so the
    graph's signature says [batch, dim] as the Triton configs do."""
    import onnx

    model = onnx.load(str(path))
    width = model.graph.output[0].type.tensor_type.shape.dim[1]
    width.Clear()
    width.dim_value = dim
    onnx.save(model, str(path))


def copy_tokenizer(spec: EncoderSpec, target: Path) -> list[Path]:
    """Tokenizer files for the server-side tokenizer (report.json carries max_seq_length for truncation)."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        source = spec.transformer_dir / name
        if source.is_file():
            copied.append(Path(shutil.copy2(source, target / name)))
    if not (target / "tokenizer.json").is_file():
        from transformers import AutoTokenizer  # slow-only tokenizers: let transformers write tokenizer.json

        AutoTokenizer.from_pretrained(str(spec.transformer_dir)).save_pretrained(str(target))
        copied = [p for p in target.iterdir() if p.is_file()]
    return copied


def copy_remote_code(spec: EncoderSpec, artefact: Path) -> str:
    """Copy the model's own code (every module ``auto_map`` names, their local imports) and its config.json into
    ``artefact/<dir>``; returns ``<dir>``, from which the torch runtime loads the architecture without the hub.

    The directory name carries a hash of the code: transformers caches dynamic modules by directory name, so two
    models' code never shares a name in one server.
    """
    import hashlib
    import shutil

    from transformers.dynamic_module_utils import get_relative_import_files

    root = spec.transformer_dir
    files: set[Path] = set()
    for value in spec.config.get("auto_map", {}).values():
        for ref in value if isinstance(value, list) else [value]:
            if not ref:
                continue
            if "--" in ref:
                raise ModelError(f"{root}/config.json auto_map {ref!r} points at code in another hub repository; "
                                 "only code inside the model's own directory can be copied into the artefact")
            source = root / (ref.rsplit(".", 1)[0].replace(".", "/") + ".py")
            if not source.is_file():
                raise ModelError(f"{root}/config.json auto_map {ref!r} names {source.name}, which is missing")
            files |= {source, *map(Path, get_relative_import_files(str(source)))}
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    name = f"remote_code_{digest.hexdigest()[:12]}"
    for path in sorted(files):
        target = artefact / name / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (artefact / name / "config.json").write_text(json.dumps(spec.config, indent=2) + "\n", encoding="utf-8")
    return name


def spec_summary(spec: EncoderSpec) -> dict[str, Any]:
    """JSON-able description of the encoder for report.json."""
    data = asdict(spec)
    for key in ("model_dir", "transformer_dir"):
        data[key] = str(data[key])
    data["dense_dirs"] = [str(p) for p in spec.dense_dirs]
    data.pop("config")
    data["dim"] = spec.dim
    data["remote_code"] = spec.remote_code
    return data

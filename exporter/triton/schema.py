"""Triton's own model-configuration schema, loaded from the ``tritonclient`` wheel, to build and check configs.

Generated ``config.pbtxt`` files are built as ``inference.ModelConfig`` protobuf messages and every written file
is parsed back with ``google.protobuf.text_format`` against the same schema, so a typo in a field name or a value
of the wrong type fails the build, not the server start on a GPU host. ``model_config_pb2.py`` sits inside
``tritonclient/grpc/`` but importing that package needs ``grpcio``; the module is loaded by file path instead.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

from google.protobuf import text_format

from ..errors import ConfigError


class SchemaError(ConfigError):
    """A config.pbtxt that Triton's schema rejects: the message names the file and the parser's complaint."""


@functools.lru_cache(maxsize=1)
def model_config_pb2() -> ModuleType:
    """The ``model_config_pb2`` module shipped in the tritonclient wheel (protobuf messages of Triton's schema)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tritonclient is not installed: pip install 'tritonclient[http]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise ImportError(f"{path} is missing from the tritonclient wheel; reinstall tritonclient")
    module_spec = importlib.util.spec_from_file_location("_emb_provider_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def render(config) -> str:
    """A ModelConfig message as config.pbtxt text (stable field order, so rebuilds are byte-identical)."""
    return text_format.MessageToString(config)


def parse(text: str, *, where: str = "config.pbtxt"):
    """Parse config.pbtxt text into a ModelConfig, raising :class:`SchemaError` naming ``where`` on any error."""
    config = model_config_pb2().ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise SchemaError(f"{where} does not match Triton's model configuration schema: {exc}") from None
    return config


def validate_file(path: Path):
    """Parse one config.pbtxt file and check the invariants the schema alone does not express."""
    config = parse(path.read_text(encoding="utf-8"), where=str(path))
    if config.name and config.name != path.parent.name:
        raise SchemaError(f"{path}: name {config.name!r} differs from its directory {path.parent.name!r}")
    if config.platform == "ensemble":
        if not config.HasField("ensemble_scheduling") or not config.ensemble_scheduling.step:
            raise SchemaError(f"{path}: an ensemble needs ensemble_scheduling with at least one step")
    elif not (config.backend or config.platform):
        raise SchemaError(f"{path}: neither backend nor platform is set")
    for tensor in list(config.input) + list(config.output):
        if not tensor.dims:
            raise SchemaError(f"{path}: tensor {tensor.name!r} has no dims")
    return config

"""A fake ``triton_python_backend_utils``: the part of Triton's python-backend API the served models use.

Mirrors the real module's surface (``Tensor``, ``InferenceRequest``, ``InferenceResponse``, ``TritonError`` with
its codes, ``get_input_tensor_by_name``, ``get_output_tensor_by_name``) with plain Python objects, so a model's
``initialize``/``execute`` can run in-process. :func:`install` puts it in ``sys.modules`` under the real name.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator, Sequence

import numpy as np

MODULE_NAME = "triton_python_backend_utils"


class TritonError(Exception):
    """``pb_utils.TritonError(message, code=INTERNAL)``; the frontend maps INVALID_ARG to HTTP 400, INTERNAL to 500."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)
    HTTP_STATUS = {INVALID_ARG: 400, NOT_FOUND: 404, UNAVAILABLE: 503, UNSUPPORTED: 400, ALREADY_EXISTS: 409}

    def __init__(self, message: str, code: int = INTERNAL):
        super().__init__(message)
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def http_status(self) -> int:
        return self.HTTP_STATUS.get(self._code, 500)


class Tensor:
    """``pb_utils.Tensor(name, numpy_array)``."""

    def __init__(self, name: str, array: np.ndarray):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"pb_utils.Tensor {name!r}: expected a numpy array, got {type(array).__name__}")
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceRequest:
    """What ``execute`` receives: named input tensors (``pb_utils.InferenceRequest(inputs=..., ...)``)."""

    def __init__(self, inputs: Sequence[Tensor] = (), requested_output_names: Sequence[str] = (),
                 model_name: str = "", request_id: str = ""):
        self._inputs = list(inputs)
        self._outputs = list(requested_output_names)
        self.model_name, self._request_id = model_name, request_id

    def inputs(self) -> list[Tensor]:
        return list(self._inputs)

    def requested_output_names(self) -> list[str]:
        return list(self._outputs)

    def request_id(self) -> str:
        return self._request_id


class InferenceResponse:
    """What ``execute`` returns per request: output tensors, or an error for that request alone."""

    def __init__(self, output_tensors: Sequence[Tensor] | None = None, error: TritonError | None = None):
        if error is not None and not isinstance(error, TritonError):
            raise TypeError(f"InferenceResponse error must be a TritonError, got {type(error).__name__}")
        self._outputs = list(output_tensors or [])
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return list(self._outputs)

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def request(**arrays: np.ndarray) -> InferenceRequest:
    """Test shorthand: ``request(TEXT=np.array([[b"hi"]], dtype=object))``."""
    return InferenceRequest(inputs=[Tensor(name, array) for name, array in arrays.items()])


def as_module() -> types.ModuleType:
    """This module's API as a fresh module object named like the real one."""
    module = types.ModuleType(MODULE_NAME, __doc__)
    for name in ("TritonError", "Tensor", "InferenceRequest", "InferenceResponse", "get_input_tensor_by_name",
                 "get_output_tensor_by_name"):
        setattr(module, name, globals()[name])
    return module


@contextlib.contextmanager
def install() -> Iterator[types.ModuleType]:
    """``sys.modules["triton_python_backend_utils"]`` is the fake inside the block, as before after it."""
    previous = sys.modules.get(MODULE_NAME)
    module = sys.modules[MODULE_NAME] = as_module()
    try:
        yield module
    finally:
        if previous is None:
            sys.modules.pop(MODULE_NAME, None)
        else:
            sys.modules[MODULE_NAME] = previous

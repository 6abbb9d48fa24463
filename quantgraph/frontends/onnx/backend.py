"""An ``onnx.backend.base.Backend`` over quantgraph, as the ONNX backend test-suite expects."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from quantgraph.compiler.api import CompiledModel, compile as qg_compile


class QuantgraphRep(BackendRep):
    def __init__(self, model: CompiledModel):
        self.model = model

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            return tuple(self.model(inputs))
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        return tuple(self.model(*inputs))


class QuantgraphBackend(Backend):
    """prepare(model) compiles the ONNX model; run(inputs) returns the outputs in model order."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return True

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> QuantgraphRep:
        if not cls.supports_device(device):
            raise ValueError(f"device {device!r} is not supported; quantgraph runs on 'CPU'")
        return QuantgraphRep(qg_compile(model, **kwargs))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> Sequence[Any]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"


prepare = QuantgraphBackend.prepare
run_model = QuantgraphBackend.run_model
supports_device = QuantgraphBackend.supports_device

"""The public Python API: thin wrappers over the frontend and the interpreter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from minicc.ir.graph import Module
from minicc.ir.interpret import interpret as _interpret
from minicc.ir.types import Dim

if TYPE_CHECKING:       # onnx takes a second to import: a warm compile never needs it
    from minicc.frontend.onnx_import import ModelLike


def import_onnx(model: ModelLike, input_shapes: Mapping[str, Sequence[Dim]] | None = None,
                input_values: Mapping[str, Any] | None = None) -> Module:
    """Import an ONNX model (a path, bytes or an onnx.ModelProto) into a verified Module.

    `input_shapes` fixes input shapes by name (static shapes fold shape arithmetic away);
    `input_values` binds inputs to constant arrays.
    """
    from minicc.frontend.onnx_import import import_onnx as _import_onnx

    return _import_onnx(model, input_shapes, input_values)


def interpret(module: Module, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run a module with the reference interpreter; returns outputs by name."""
    return _interpret(module, inputs)


def emulate_cuda(model: Any) -> Any:
    """A model compiled for target "cuda" (a CompiledModel or its Artifact) made runnable on
    this CPU: the generated CUDA C built by the host C++ compiler (codegen/cuda/host.py) and
    launched as the GPU runtime would (runtime/cuda_host.py). `.run(feeds)` returns numpy
    outputs; it checks kernels without a GPU and says nothing of their speed."""
    from minicc.codegen.cuda.host import build_host
    from minicc.driver import host_op
    from minicc.errors import ArtifactError
    from minicc.runtime.artifact import Artifact
    from minicc.runtime.cuda_host import HostCudaExecutable, HostModule

    art = getattr(model, "artifact", model)
    if not isinstance(art, Artifact):
        raise ArtifactError(f"emulate_cuda takes a compiled model or an artifact, not "
                            f"{type(model).__name__}")
    if art.target != "cuda":
        raise ArtifactError(f"emulate_cuda runs CUDA artifacts; this one is for {art.target} "
                            "(compile with target='cuda')")
    return HostCudaExecutable(art, HostModule(*build_host(art.source)), host_op)

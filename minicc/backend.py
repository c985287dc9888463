"""The ONNX backend adapter (`onnx.backend.base.Backend`), so the official test suite runs.

`prepare` checks the model and imports it; `run` compiles it for the shapes of the inputs it is
given (minicc compiles static graphs) and runs the native code. A model whose shape operands are
graph inputs (Reshape's shape fed at run time, say) is imported again with those inputs bound to
the given values. Compiled models are cached per (shapes, bound values).
`MiniccBackend.interpret = True` runs the reference interpreter instead.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from minicc.errors import FrontendError, NeedsConstantError, RuntimeInputError
from minicc.frontend.onnx_import import import_onnx
from minicc.ir.graph import Module
from minicc.ir.interpret import interpret


class MiniccRep(BackendRep):
    """A prepared model: compiled for the input shapes of each run (or interpreted)."""

    def __init__(self, model: onnx.ModelProto, device: str = "CPU", interpret: bool = False):
        self.model = model
        self.device = device
        self.interpret = interpret
        self._compiled: dict[bytes, Any] = {}
        self.threads: int | None = None
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in inits]
        self.output_names = [vi.name for vi in model.graph.output]
        self._bound: tuple[str, ...] = ()
        self._cache: dict[bytes, Module] = {}
        self.module: Module | None = None
        try:
            self.module = import_onnx(model)
        except NeedsConstantError as e:
            self._bound = e.names
        except FrontendError as e:
            if "static" not in str(e):  # shapes come with the first run
                raise

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, dict):
            return {k: np.asarray(v) for k, v in inputs.items()}
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) > len(self.input_names):
            raise RuntimeInputError(f"got {len(inputs)} inputs, the model takes "
                                    f"{len(self.input_names)} ({', '.join(self.input_names)})")
        return {n: np.asarray(v) for n, v in zip(self.input_names, inputs)}

    def _module_for(self, feeds: dict[str, np.ndarray]) -> Module:
        if self.module is not None:
            return self.module
        h = hashlib.blake2b(digest_size=16)
        for n in sorted(feeds):
            a = feeds[n]
            h.update(f"{n}:{a.dtype}:{a.shape};".encode())
            if n in self._bound:
                h.update(np.ascontiguousarray(a).tobytes())
        key = h.digest()
        if key not in self._cache:
            shapes = {n: tuple(a.shape) for n, a in feeds.items() if n not in self._bound}
            while True:
                values = {n: feeds[n] for n in self._bound if n in feeds}
                try:
                    self._cache[key] = import_onnx(self.model, shapes, values)
                    break
                except NeedsConstantError as e:
                    new = tuple(n for n in e.names if n not in self._bound)
                    if not new:
                        raise
                    self._bound += new
                    for n in new:
                        shapes.pop(n, None)
        return self._cache[key]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        feeds = self._feeds(inputs)
        module = self._module_for(feeds)
        live = {n: feeds[n] for n in module.main.input_names if n in feeds}
        missing = [n for n in module.main.input_names if n not in feeds]
        if missing:
            raise RuntimeInputError(f"missing inputs: {', '.join(missing)}")
        if self.interpret:
            out = interpret(module, live)
        else:
            out = self._compiled_for(module, live).run(live)
        return tuple(out[n] for n in module.main.output_names)

    def _compiled_for(self, module: Module, feeds: dict[str, np.ndarray]) -> Any:
        from minicc import CompileOptions, compile

        key = repr((id(module), sorted((n, a.dtype.str, a.shape) for n, a in feeds.items())))
        cm = self._compiled.get(key.encode())
        if cm is None:
            shapes = {n: tuple(a.shape) for n, a in feeds.items()}
            m = module
            f = m.main
            if any(not v.type.is_static for v in f.inputs):
                # bind symbolic dims by importing again with the actual shapes
                values = {n: feeds[n] for n in self._bound if n in feeds}
                m = import_onnx(self.model, shapes, values)
            target = "cuda" if self.device.upper().startswith("CUDA") else "llvm"
            cm = compile(m, options=CompileOptions(threads=self.threads, target=target))
            self._compiled[key.encode()] = cm
        return cm


class MiniccBackend(Backend):
    interpret = False      # True: the reference interpreter instead of compiled code
    threads: int | None = None

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> MiniccRep:
        super().prepare(model, device, **kwargs)
        rep = MiniccRep(model, device, interpret=cls.interpret)
        rep.threads = cls.threads
        return rep

    @classmethod
    def supports_device(cls, device: str) -> bool:
        if device == "CPU":
            return True
        if device.upper().startswith("CUDA") and not cls.interpret:
            from minicc.codegen.cuda.nvrtc import nvrtc_available
            from minicc.runtime.cuda import cuda_device_available

            return cuda_device_available() is None and nvrtc_available() is None
        return False

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run a single node: wrap it in a model whose inputs are the node's inputs."""
        arrays = [np.asarray(x) for x in inputs]
        ins = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(
            a.dtype), a.shape) for n, a in zip(node.input, arrays) if n]
        outs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
                for n in node.output if n]
        graph = onnx.helper.make_graph([node], "run_node", ins, outs)
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        rep = MiniccRep(model, device, interpret=cls.interpret)
        rep.threads = cls.threads
        return rep.run([a for n, a in zip(node.input, arrays) if n])


prepare = MiniccBackend.prepare
run_model = MiniccBackend.run_model
run_node = MiniccBackend.run_node
supports_device = MiniccBackend.supports_device

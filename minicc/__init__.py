"""minicc: a standalone deep-learning compiler. ONNX in, its own SSA tensor IR, native code out.

Public API:
    compile(model, target="llvm", opt_level=3, threads=None, options=None, ...) -> CompiledModel
    load(path) -> CompiledModel                  (an artifact written by CompiledModel.save)
    CompileOptions(...)                          every compile option, passed whole
    analyze(model) -> Analysis                   FLOPs, parameters, bytes per op and kernel
    quantize(model, calib, method="entropy") -> Quantized   INT8 post-training quantization
    import_onnx(path_or_proto, input_shapes=None) -> Module
    interpret(module, inputs) -> dict[str, np.ndarray]
    emulate_cuda(compiled).run(inputs)           a CUDA model's kernels run on this CPU
    minicc.ir.parse(text) / str(module)
"""

from minicc.api import emulate_cuda, import_onnx, interpret
from minicc.driver import CompiledModel, analyze, compile, load
from minicc.errors import MiniccError
from minicc.options import CompileOptions, Target
from minicc.quantization import Quantized, quantize

__version__ = "0.1.0"
__all__ = ["compile", "load", "analyze", "quantize", "Quantized", "CompiledModel",
           "CompileOptions", "Target",
           "import_onnx", "interpret", "emulate_cuda", "MiniccError", "__version__"]

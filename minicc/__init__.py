"""minicc: a standalone deep-learning compiler. ONNX in, its own SSA tensor IR, native code out.

Public API:
    import_onnx(path_or_proto, input_shapes=None) -> Module
    interpret(module, inputs) -> dict[str, np.ndarray]
    minicc.ir.parse(text) / str(module)
"""

from minicc.api import import_onnx, interpret
from minicc.errors import MiniccError

__version__ = "0.1.0"
__all__ = ["import_onnx", "interpret", "MiniccError", "__version__"]

"""minicc's graph IR: types, values, ops, functions, the op registry, printer, parser, verifier and
the reference interpreter. Knows nothing about ONNX, LLVM or CUDA."""

from minicc.ir import ops as _ops  # noqa: F401  (registers every op)
from minicc.ir.graph import Attrs, ConstData, Function, Module, Op, SourceLoc, Value
from minicc.ir.parser import parse
from minicc.ir.printer import print_module
from minicc.ir.registry import OPS, FusionKind, get_op
from minicc.ir.types import DType, TensorType

__all__ = ["Attrs", "ConstData", "Function", "Module", "Op", "SourceLoc", "Value", "OPS",
           "FusionKind", "get_op", "DType", "TensorType", "parse", "print_module"]

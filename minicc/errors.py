"""The one exception hierarchy of minicc.

Messages follow `<what failed>: <where> — <why>. <how to fix>`. Every layer raises one of these, so
the CLI can print a single line and exit with code 2 for user errors instead of a traceback.
"""

from __future__ import annotations


class MiniccError(Exception):
    """Base of every error minicc raises on purpose."""


class FrontendError(MiniccError):
    """The ONNX model could not be imported (bad file, bad graph, bad external data)."""


class InvalidModelError(FrontendError):
    """The model breaks the ONNX spec (an attribute its schema does not define, an opset no
    onnx defines, a non-positive stride, ...): refused, as onnxruntime refuses it."""


class UnsupportedFeatureError(FrontendError):
    """A converter does not cover this use of an op (a Resize mode, run-time integer weights);
    the importer runs the node on onnx's reference instead where it can."""


class UnsupportedOpError(FrontendError, NotImplementedError):
    """One or more ONNX ops have no converter for the model's opset."""


class NeedsConstantError(FrontendError):
    """Graph inputs feed operands that must be known at compile time (a shape, axes, k...).

    `names` lists those inputs; a caller that knows their values (the ONNX backend adapter, `minicc
    run`) can bind them as constants and import again.
    """

    def __init__(self, message: str, names: tuple[str, ...]):
        super().__init__(message)
        self.names = names


class ParseError(MiniccError):
    """IR text could not be parsed; carries the position and a caret snippet."""

    def __init__(self, message: str, path: str = "<text>", line: int = 0, col: int = 0,
                 snippet: str = ""):
        self.path, self.line, self.col, self.snippet = path, line, col, snippet
        where = f"{path}:{line}:{col}: " if line else ""
        super().__init__(f"{where}{message}" + (f"\n{snippet}" if snippet else ""))


class VerificationError(MiniccError):
    """The IR breaks an invariant (use before definition, type mismatch, bad attribute...)."""


class ShapeError(MiniccError):
    """Shape or dtype inference failed for an op (incompatible shapes, bad axis...)."""


class InterpreterError(MiniccError):
    """The reference interpreter could not run the module (missing weights, bad inputs)."""


class RuntimeInputError(MiniccError, ValueError):
    """An input given at run time has the wrong name, dtype, shape or layout."""


class ResourceError(MiniccError):
    """The model needs more memory than the compile's budget (minicc/resources.py)."""


class ScheduleError(MiniccError):
    """A schedule primitive was applied where it is not legal."""


class CodegenError(MiniccError):
    """A kernel could not be rendered for a target."""


class ToolchainError(CodegenError):
    """LLVM or NVRTC rejected generated code; includes the log and a repro command."""


class ArtifactError(MiniccError):
    """A saved artifact is unreadable, tampered with, or built for another version or CPU."""


class InternalError(MiniccError):
    """A bug in minicc: an invariant that user input cannot break was broken."""

"""Op definitions, one module per family; importing this package fills `ir.registry.OPS`."""

from minicc.ir.ops import (control, convert, elementwise, linalg, misc, nn, onnx_ref, quant,  # noqa: F401
                           reduce, shape)

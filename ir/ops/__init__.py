"""Op definitions, one module per family; importing this package fills `ir.registry.OPS`."""

from minicc.ir.ops import convert, elementwise, linalg, misc, nn, quant, reduce, shape  # noqa: F401

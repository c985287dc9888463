"""ONNX converters, one module per op family; importing this package registers them all."""

from minicc.frontend.convert import (control, elementwise, loss, misc, nn,  # noqa: F401
                                     quant, reduce, rnn, sequence, shape)

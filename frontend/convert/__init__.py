"""ONNX converters, one module per op family; importing this package registers them all."""

from minicc.frontend.convert import (elementwise, loss, misc, nn, quant,  # noqa: F401
                                     reduce, rnn, shape)

"""ONNX converters, one module per op family; importing this package registers them all."""

from minicc.frontend.convert import (elementwise, misc, nn, reduce, rnn,  # noqa: F401
                                     shape)

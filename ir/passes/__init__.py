"""Graph passes: each is a pure function Function -> Function, one module per pass."""

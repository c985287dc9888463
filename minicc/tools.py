"""Driver helpers shared by the CLI, the demo and tests: reading and writing IR files with their
weights, building inputs, running a model with constant-input binding, comparing outputs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import FrontendError, MiniccError, NeedsConstantError, RuntimeInputError
from minicc.ir.graph import Module
from minicc.ir.interpret import random_inputs
from minicc.ir.parser import parse
from minicc.ir.printer import print_module
from minicc.ir.types import Dim


def weights_path(mir: Path) -> Path:
    return mir.with_suffix(".npz")


def save_mir(module: Module, path: str | os.PathLike) -> Path:
    """Write IR text to `path` and the weights it refers to (blob<...>) to `path`.npz beside it."""
    p = Path(path)
    text = print_module(module)
    blobs = {d: a for d, a in module.weights().items() if f'blob<"{d}">' in text}
    _atomic_write(p, text.encode())
    w = weights_path(p)
    if blobs:
        with tempfile.NamedTemporaryFile(dir=w.parent, suffix=".npz", delete=False) as fh:
            np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in blobs.items()})
        os.replace(fh.name, w)
    elif w.exists():
        w.unlink()
    return p


def load_mir(path: str | os.PathLike) -> Module:
    """Parse an IR file, taking weights from the .npz beside it when present."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FrontendError(f"cannot read '{p}': no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FrontendError(f"cannot read '{p}': {e}") from None
    weights: dict[str, np.ndarray] = {}
    w = weights_path(p)
    if w.exists():
        try:
            with np.load(w, allow_pickle=False) as z:
                weights = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise FrontendError(f"cannot read weights '{w}': {e}") from None
    return parse(text, weights=weights, path=str(p))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as fh:
        fh.write(data)
    os.replace(fh.name, path)


def parse_shape_arg(spec: str) -> tuple[str, tuple[Dim, ...]]:
    """'name=1,3,224,224' (symbols allowed: 'x=N,3'; ranges: 'x=1..16,3', '4..' with no upper
    bound) -> (name, dims); a range stays the text 'LO..HI' (minicc/dynamic.py reads it)."""
    if "=" not in spec:
        raise RuntimeInputError(f"bad --input-shape '{spec}': expected NAME=D0,D1,...")
    name, dims = spec.rsplit("=", 1)
    out: list[Dim] = []
    for d in dims.split(",") if dims else []:
        d = d.strip()
        if d.isdigit():
            out.append(int(d))
        elif d.isidentifier():
            out.append(d)
        elif ".." in d:
            from minicc.dynamic import parse_range

            try:
                parse_range(d)
            except MiniccError as e:
                raise RuntimeInputError(f"{e} in --input-shape '{spec}'") from None
            out.append(d)
        else:
            raise RuntimeInputError(f"bad dimension '{d}' in --input-shape '{spec}'")
    return name, tuple(out)


def load_input_arg(spec: str) -> tuple[str, np.ndarray]:
    """'name=file.npy' -> (name, array)."""
    if "=" not in spec:
        raise RuntimeInputError(f"bad --input '{spec}': expected NAME=FILE.npy")
    name, f = spec.rsplit("=", 1)
    try:
        return name, np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise RuntimeInputError(f"input '{name}': no such file '{f}'") from None
    except (OSError, ValueError) as e:
        raise RuntimeInputError(f"input '{name}': cannot read '{f}' as .npy: {e}") from None


def import_for_inputs(model: Any, inputs: Mapping[str, np.ndarray],
                      input_shapes: Mapping[str, Sequence[Dim]] | None = None
                      ) -> tuple[Module, set[str]]:
    """Import an ONNX model; inputs that feed shape operands are bound to their given values.
    Returns the module and the names of the inputs that were bound."""
    from minicc.frontend.onnx_import import import_onnx

    bound: dict[str, np.ndarray] = {}
    while True:
        try:
            return import_onnx(model, input_shapes, bound), set(bound)
        except NeedsConstantError as e:
            new = [n for n in e.names if n not in bound]
            missing = [n for n in new if n not in inputs]
            if missing or not new:
                raise
            for n in new:
                bound[n] = inputs[n]


def make_inputs(module: Module, given: Mapping[str, np.ndarray], random: bool,
                seed: int = 0, bound: set[str] = frozenset()) -> dict[str, np.ndarray]:  # type: ignore[assignment]
    """The module's inputs: given ones, random ones for the rest with `random`. Names the model
    does not take are an error (`bound`: inputs that were folded into the module as constants)."""
    f = module.main
    unknown = [n for n in given if n not in f.input_names and n not in bound]
    if unknown:
        raise RuntimeInputError(f"unknown input{'s' if len(unknown) > 1 else ''} "
                                f"{', '.join(repr(n) for n in unknown)}; the model takes "
                                f"{', '.join(f.input_names) or 'no inputs'}")
    missing = [n for n in f.input_names if n not in given]
    if missing and not random:
        listing = ", ".join(f"{n} ({v.type})" for n, v in zip(f.input_names, f.inputs)
                            if n in missing)
        raise RuntimeInputError(f"missing inputs: {listing}. Pass --input NAME=FILE.npy or "
                                "--random-inputs")
    out = dict(random_inputs(f, seed)) if missing else {}
    out.update({n: a for n, a in given.items() if n in f.input_names})
    return out


def onnxruntime_outputs(model_path: str, inputs: Mapping[str, np.ndarray]
                        ) -> dict[str, np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise MiniccError("--compare onnxruntime needs onnxruntime (pip install onnxruntime)"
                          ) from None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = sess.run(None, {n: inputs[n] for n in names if n in inputs})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def compare(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], rtol: float = 1e-3,
            atol: float = 1e-4) -> list[dict[str, Any]]:
    """Per output: max abs error, max rel error, and whether allclose(rtol, atol) holds."""
    rows = []
    for name, r in ref.items():
        g = got.get(name)
        if g is None:
            rows.append({"name": name, "ok": False, "why": "missing"})
            continue
        if g.shape != r.shape:
            rows.append({"name": name, "ok": False, "why": f"shape {g.shape} vs {r.shape}"})
            continue
        gd, rd = g.astype(np.float64), r.astype(np.float64)
        diff = np.abs(gd - rd)
        rel = diff / np.maximum(np.abs(rd), 1e-12)
        both_nan = np.isnan(gd) & np.isnan(rd)
        ok = bool(np.all(np.isclose(gd, rd, rtol=rtol, atol=atol) | both_nan))
        rows.append({"name": name, "ok": ok, "max_abs": float(np.nanmax(diff)) if diff.size else 0.0,
                     "max_rel": float(np.nanmax(rel)) if rel.size else 0.0})
    return rows


"""Dynamic shapes: a model whose inputs keep symbolic dims compiles into a `DynamicModel`, which
compiles one specialization per concrete input shape on first sight and caches it.

Why specialization and not kernels that take their dims at run time (TVM Relax's way): every
schedule decision minicc makes (tile sizes, the packed GEMM panels, vectorizing the channel or
the pixel loop, where a kernel goes parallel) depends on the shapes, and a static compile is what
runs at 0.9-1.1x onnxruntime. A specialization is exactly that static compile, so its steady-state
latency is the static latency plus one dict lookup; the price is a compile on each new shape,
paid once per shape (and across processes only once: the compile cache keeps each one).
Declared ranges (`x=1..16,3,224,224`, as TensorRT's optimization profiles) bound what a run may
ask for, so a deployment cannot be made to compile without end.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import ArtifactError, MiniccError, RuntimeInputError
from minicc.options import CompileOptions

FORMAT = "minicc-dynamic/1"
MAX_SPECIALIZATIONS = 16      # compiled shapes kept in memory (least recently used leaves)


@dataclass(frozen=True)
class DimSpec:
    """A dim left to run time: the symbol it shares with other dims, and its allowed range."""

    name: str
    lo: int = 0
    hi: int | None = None

    def __str__(self) -> str:
        if self.lo == 0 and self.hi is None:
            return self.name
        return f"{self.name}:{self.lo}..{'' if self.hi is None else self.hi}"

    def admits(self, d: int) -> bool:
        return d >= self.lo and (self.hi is None or d <= self.hi)


InputSpec = tuple[str, str, tuple["int | DimSpec", ...]]     # name, dtype, dims


def parse_range(d: str) -> tuple[int, int | None] | None:
    """'1..16' -> (1, 16); '4..' -> (4, None); anything else -> None."""
    if ".." not in d:
        return None
    lo, hi = d.split("..", 1)
    if not lo.isdigit() or (hi and not hi.isdigit()):
        raise MiniccError(f"bad dim range '{d}': expected LO..HI or LO.. with whole numbers")
    if hi and int(hi) < int(lo):
        raise MiniccError(f"bad dim range '{d}': the upper bound is below the lower one")
    return int(lo), int(hi) if hi else None


def has_ranges(shapes: Mapping[str, Sequence[Any]] | None) -> bool:
    return any(isinstance(d, str) and ".." in d for s in (shapes or {}).values() for d in s)


def split_ranges(shapes: Mapping[str, Sequence[Any]], declared: Mapping[str, Sequence[Any]]
                 ) -> tuple[dict[str, tuple[Any, ...]], dict[tuple[str, int], tuple[int, Any]]]:
    """Input shapes with each range replaced by a symbol (the model's own name for that dim
    where it has one), and the ranges by (input, dim index)."""
    plain: dict[str, tuple[Any, ...]] = {}
    ranges: dict[tuple[str, int], tuple[int, Any]] = {}
    for name, dims in shapes.items():
        model = list(declared.get(name, ()))
        out = []
        for k, d in enumerate(dims):
            r = parse_range(d) if isinstance(d, str) else None
            if r is None:
                out.append(d)
                continue
            own = model[k] if k < len(model) else None
            out.append(own if isinstance(own, str) and own != "?" else f"{name}_d{k}")
            ranges[(name, k)] = r
        plain[name] = tuple(out)
    return plain, ranges


def signature_of(inputs: Sequence[tuple[str, Any]],
                 ranges: Mapping[tuple[str, int], tuple[int, Any]]) -> list[InputSpec]:
    """The run-time signature from (name, TensorType) pairs: each symbolic dim a DimSpec (an
    unknown dim "?" gets a symbol of its own), with its declared range."""
    sig: list[InputSpec] = []
    for name, ty in inputs:
        dims: list[int | DimSpec] = []
        for k, d in enumerate(ty.shape):
            if isinstance(d, int):
                dims.append(d)
                continue
            lo, hi = ranges.get((name, k), (0, None))
            dims.append(DimSpec(f"{name}_d{k}" if d == "?" else d, lo, hi))
        sig.append((name, ty.dtype.value, tuple(dims)))
    return sig


def describe(spec: InputSpec) -> str:
    name, dt, dims = spec
    return f"{dt}[{','.join(map(str, dims))}]"


def check_shapes(signature: Sequence[InputSpec], inputs: Mapping[str, Any]
                 ) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input, after checking names, array types and dtypes (as a
    static model does) and each dim: fixed dims match, ranged dims are in range, and a symbol
    shared by several dims has one value. Errors name the input and the dim."""
    from minicc.runtime.checks import check_array, check_names

    check_names([(n, dt, describe((n, dt, d))) for n, dt, d in signature], inputs)
    seen: dict[str, tuple[int, str, int]] = {}      # symbol -> (value, input, dim index)
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in signature:
        name, dt, dims = spec
        x = inputs[name]
        check_array(name, dt, describe(spec), x)
        want = describe(spec)
        if x.ndim != len(dims):
            raise RuntimeInputError(f"input '{name}': rank {x.ndim} (shape {list(x.shape)}) "
                                    f"but the model expects {want}")
        for k, (d, got) in enumerate(zip(dims, x.shape)):
            if isinstance(d, int):
                if got != d:
                    raise RuntimeInputError(f"input '{name}': dim {k} is {got}, but the model "
                                            f"fixes it to {d} (it expects {want})")
                continue
            if not d.admits(got):
                raise RuntimeInputError(
                    f"input '{name}': dim {k} ({d.name}) is {got}, outside its declared range "
                    f"{d.lo}..{'' if d.hi is None else d.hi} (shape {list(x.shape)}); compile "
                    "with a wider --input-shape range")
            if d.name in seen and seen[d.name][0] != got:
                v, other, j = seen[d.name]
                raise RuntimeInputError(
                    f"input '{name}': dim {k} ({d.name}) is {got}, but input '{other}' dim {j} "
                    f"gave {d.name} = {v}; dims that share a name must agree")
            seen.setdefault(d.name, (got, name, k))
        shapes[name] = tuple(int(s) for s in x.shape)
    return shapes


class DynamicModel:
    """A compiled model with dynamic dims. Call it (or `run(dict)`) like a CompiledModel: the
    first call with a new input shape compiles that specialization (seconds; a cache hit when
    this shape was compiled before, here or in another process), later calls run it directly.
    `specialize(shapes)` compiles one ahead of time; `specializations` lists the compiled ones.
    """

    def __init__(self, source: bytes | str, signature: Sequence[InputSpec],
                 output_names: Sequence[str], options: CompileOptions, report: Any = None,
                 max_specializations: int = MAX_SPECIALIZATIONS):
        from minicc.driver import CompileReport

        self.source = source             # the ONNX model: bytes, or a path (external data)
        self.signature = list(signature)
        self.output_names = list(output_names)
        self.options = replace(options, input_shapes=None)
        self.report = report or CompileReport()
        self.max_specializations = max_specializations
        self._specs: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._names = [n for n, _, _ in self.signature]
        self.compile_seconds: dict[tuple[tuple[int, ...], ...], float] = {}

    # ---- what a CompiledModel also offers
    @property
    def input_names(self) -> list[str]:
        return list(self._names)

    @property
    def target(self) -> str:
        return self.options.target

    @property
    def threads(self) -> int:
        for cm in self._specs.values():
            return int(cm.threads)
        return self.options.threads or 1

    @property
    def artifact(self) -> Any:
        raise MiniccError("this model has dynamic dims (" + ", ".join(
            f"{n}: {describe(s)}" for n, s in zip(self._names, self.signature)) + ") and one "
            "artifact per input shape; this needs static shapes: compile with --input-shape "
            "NAME=D0,D1,... (or take specialize({name: shape}).artifact)")

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        try:
            key = tuple(inputs[n].shape for n in self._names)
            cm = self._specs.get(key)
        except (KeyError, AttributeError, TypeError):
            cm = None
        if cm is None:
            cm = self._for(check_shapes(self.signature, inputs))
        return cm.run(inputs)

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        return self.run(inputs)

    def profile(self, inputs: Mapping[str, Any], repeat: int = 10) -> list[dict]:
        return self._for(check_shapes(self.signature, inputs)).profile(inputs, repeat)

    # ---- specializations
    @property
    def specializations(self) -> list[dict[str, tuple[int, ...]]]:
        return [dict(zip(self._names, k)) for k in self._specs]

    def specialize(self, shapes: Mapping[str, Sequence[int]]) -> Any:
        """The CompiledModel for these input shapes (compiled now unless it is already)."""
        fake = {}
        for n, dt, _ in self.signature:
            if n in shapes:
                fake[n] = np.lib.stride_tricks.as_strided(
                    np.zeros(1, dtype=_np_dtype(dt)), tuple(int(d) for d in shapes[n]),
                    [0] * len(shapes[n]))
        return self._for(check_shapes(self.signature, fake))

    def _for(self, shapes: Mapping[str, tuple[int, ...]]) -> Any:
        key = tuple(shapes[n] for n in self._names)
        with self._lock:
            cm = self._specs.get(key)
            if cm is not None:
                self._specs.move_to_end(key)
                return cm
            from minicc.driver import compile

            t = time.perf_counter()
            cm = compile(self.source, options=replace(self.options, input_shapes=dict(shapes)))
            dt = time.perf_counter() - t
            self.compile_seconds[key] = dt
            self.report.notes.append(
                f"specialized for {_shape_text(shapes)} in {dt:.2f} s"
                + (" (cache hit)" if cm.report.cache_hit else ""))
            self._specs[key] = cm
            while len(self._specs) > self.max_specializations:
                old, _ = self._specs.popitem(last=False)
                self.report.notes.append(f"dropped the specialization for "
                                         f"{_shape_text(dict(zip(self._names, old)))}")
            return cm

    def summary(self) -> str:
        lines = ["dynamic model: compiles one specialization per input shape on first sight"]
        lines += [f"  input {n}: {describe(s)}" for n, s in zip(self._names, self.signature)]
        lines.append(f"specializations: {len(self._specs)}")
        for k, cm in self._specs.items():
            what = "control flow, compiled as segments" if hasattr(cm, "function") else \
                f"{len(cm.artifact.summary.get('kernels', []))} kernels"
            lines.append(f"  {_shape_text(dict(zip(self._names, k)))}: {what}")
        return "\n".join(lines)

    # ---- on disk
    def save(self, path: str | os.PathLike) -> Path:
        """One zip: the ONNX model, the options, the signature and every compiled
        specialization (each a full artifact), so a loaded model runs those shapes at once."""
        from minicc import __version__
        from minicc.runtime.artifact import artifact_bytes, write_atomic

        src = self.source if isinstance(self.source, bytes) else _with_external(self.source)
        specs = list(self._specs.items())
        manifest = {"format": FORMAT, "version": __version__,
                    "signature": [[n, dt, [_dim_json(d) for d in dims]]
                                  for n, dt, dims in self.signature],
                    "outputs": self.output_names, "options": _options_json(self.options),
                    "max_specializations": self.max_specializations,
                    "specializations": [[list(map(list, k)), f"spec-{i}.mcc"]
                                        for i, (k, _) in enumerate(specs)]}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=1))
            z.writestr("model.onnx", src)
            for i, (_, cm) in enumerate(specs):
                z.writestr(f"spec-{i}.mcc", artifact_bytes(cm.artifact))
        return write_atomic(path, buf.getvalue())


def is_onnx(model: Any) -> bool:
    """An ONNX model (path, bytes or ModelProto), not a Module or a .mir file."""
    if isinstance(model, bytes) or type(model).__name__ == "ModelProto":
        return True
    return isinstance(model, (str, os.PathLike)) and not str(model).endswith(".mir")


def from_onnx(model: Any, o: CompileOptions, report: Any, module: Any = None,
              why: str = "") -> DynamicModel:
    """A DynamicModel for an ONNX model whose inputs keep symbolic dims (or declared ranges).
    It is imported once now with the dims symbolic, so that a model minicc cannot import is
    refused at compile time, not on its first run; where the import needs concrete shapes
    (`why`: a Resize whose input size is unknown), each shape is imported when first seen."""
    from minicc.driver import _as_module
    from minicc.errors import (FrontendError, InvalidModelError, NeedsConstantError,
                               UnsupportedOpError)
    from minicc.frontend.onnx_import import declared_inputs

    if o.dump:
        raise MiniccError("--dump-ir / dump= needs static input shapes, but the model's inputs "
                          "keep dynamic dims; give each one with --input-shape NAME=D0,D1,...")
    declared = {n: t.shape for n, t in declared_inputs(model)}
    shapes, ranges = split_ranges(o.input_shapes or {}, declared)
    if module is None and not why:
        try:
            module = _as_module(model, shapes)
        except (UnsupportedOpError, InvalidModelError, NeedsConstantError):
            raise
        except FrontendError as e:
            why = str(e)
    inputs = list(zip(module.main.input_names, (v.type for v in module.main.inputs))) \
        if module is not None else declared_inputs(model, shapes)
    src = onnx_source(model)
    assert src is not None
    sig = signature_of(inputs, ranges)
    outputs = list(module.main.output_names) if module is not None else \
        _onnx_outputs(model)
    dm = DynamicModel(src, sig, outputs, o, report)
    report.notes.append("inputs keep dynamic dims (" + ", ".join(
        f"{n}: {dt}[{','.join(map(str, d))}]" for n, dt, d in sig) + "): compiling one "
        "specialization per input shape on first sight")
    if why:
        report.notes.append(f"the model does not import with symbolic dims ({why}); each input "
                            "shape is imported when first seen")
    return dm


def onnx_source(model: Any) -> bytes | str | None:
    """An ONNX model as what a DynamicModel keeps: its bytes, or its path where its weights
    are external files; None for a Module or .mir file."""
    if isinstance(model, bytes):
        return model
    if type(model).__name__ == "ModelProto":
        return model.SerializeToString()
    if not is_onnx(model):
        return None
    data = Path(model).read_bytes()
    return str(Path(model).resolve()) if b"location" in data else data


def _onnx_outputs(model: Any) -> list[str]:
    from minicc.frontend.onnx_import import load_model

    return [vi.name for vi in load_model(model)[0].graph.output]


def declares_dynamic(model: Any, o: CompileOptions) -> bool:
    from minicc.frontend.onnx_import import declared_inputs

    try:
        return not all(t.is_static for _, t in declared_inputs(model, o.input_shapes))
    except MiniccError:
        return False


def is_dynamic_archive(path: str | os.PathLike) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return "model.onnx" in z.namelist() and \
                json.loads(z.read("manifest.json")).get("format") == FORMAT
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, AttributeError):
        return False


def load_dynamic(path: str | os.PathLike, threads: int | None = None) -> DynamicModel:
    from minicc import __version__
    from minicc.driver import CompiledModel
    from minicc.runtime.artifact import read_artifact

    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            m = json.loads(z.read("manifest.json"))
            src = z.read("model.onnx")
            blobs = {name: z.read(name) for _, name in m["specializations"]}
        if m.get("version") != __version__:
            raise ArtifactError(f"cannot load '{p}': built by minicc {m.get('version')}, this "
                                f"is minicc {__version__}; recompile the model")
        sig = [(str(n), str(dt), tuple(_dim_from_json(d) for d in dims))
               for n, dt, dims in m["signature"]]
        o = CompileOptions(**_options_from_json(m["options"]))
        dm = DynamicModel(src, sig, m["outputs"], o,
                          max_specializations=int(m["max_specializations"]))
        for key, name in m["specializations"]:
            art = read_artifact(io.BytesIO(blobs[name]), f"{p}!{name}")
            dm._specs[tuple(tuple(int(d) for d in s) for s in key)] = \
                CompiledModel(art, threads)
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise ArtifactError(f"cannot load '{p}': malformed dynamic-model archive ({e})") \
            from None
    return dm


def _shape_text(shapes: Mapping[str, Sequence[int]]) -> str:
    return ", ".join(f"{n}[{','.join(map(str, s))}]" for n, s in shapes.items())


def _np_dtype(dt: str) -> Any:
    from minicc.runtime.checks import NP_DTYPES

    return NP_DTYPES[dt]


def _dim_json(d: int | DimSpec) -> Any:
    return d if isinstance(d, int) else {"name": d.name, "lo": d.lo, "hi": d.hi}


def _dim_from_json(d: Any) -> int | DimSpec:
    if isinstance(d, int):
        return d
    return DimSpec(str(d["name"]), int(d["lo"]), None if d["hi"] is None else int(d["hi"]))


def _options_json(o: CompileOptions) -> dict[str, Any]:
    out = {}
    for f in fields(o):
        v = getattr(o, f.name)
        if f.name == "input_shapes":
            continue
        out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping)
                                                          else v)
    return out


def _options_from_json(d: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(CompileOptions)}
    out = {k: v for k, v in d.items() if k in known}
    if "dump" in out:
        out["dump"] = tuple(out["dump"])
    return out


def _with_external(path: str) -> bytes:
    """The model at `path` with its external data read in (a dynamic archive is one file)."""
    import onnx

    return onnx.load(path, load_external_data=True).SerializeToString()

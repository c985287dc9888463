"""The `minicc` command line: a thin shell over the Python API.

Results go to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 a check failed (demo, --compare),
2 bad input (a bad model, unsupported op, wrong input; also usage errors), 3 internal error.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

import numpy as np

from minicc.errors import MiniccError

EXIT_OK, EXIT_CHECK, EXIT_USER, EXIT_INTERNAL = 0, 1, 2, 3


def _err(msg: str) -> None:
    print(f"minicc: error: {msg}", file=sys.stderr)


def _shapes(args: argparse.Namespace) -> dict:
    from minicc.tools import parse_shape_arg

    return dict(parse_shape_arg(s) for s in (args.input_shape or []))


def _load(args: argparse.Namespace, inputs: dict | None = None):
    """(module, names of inputs bound as constants) from a .onnx or .mir path."""
    from minicc.tools import import_for_inputs, load_mir

    p = Path(args.model)
    if p.suffix == ".mir":
        return load_mir(p), set()
    return import_for_inputs(str(p), inputs or {}, _shapes(args))


def cmd_import(args: argparse.Namespace) -> int:
    from minicc.api import import_onnx
    from minicc.ir.printer import print_module
    from minicc.tools import load_input_arg, save_mir

    values = dict(load_input_arg(s) for s in (args.input_value or []))
    module = import_onnx(args.model, _shapes(args), values)
    if args.output:
        p = save_mir(module, args.output)
        w = p.with_suffix(".npz")
        print(f"wrote {p}" + (f" and {w}" if w.exists() else ""), file=sys.stderr)
    else:
        sys.stdout.write(print_module(module, locs=args.locs))
    return EXIT_OK


def _summary(name: str, a: np.ndarray) -> str:
    if a.size and a.dtype.kind in "fiub":
        af = a.astype(np.float64)
        stats = f" min {af.min():.6g} max {af.max():.6g} mean {af.mean():.6g}"
    else:
        stats = ""
    return f"  {name}: {a.dtype}{list(a.shape)}{stats}"


def cmd_run(args: argparse.Namespace) -> int:
    from minicc.api import interpret
    from minicc.tools import compare, load_input_arg, make_inputs, onnxruntime_outputs

    given = dict(load_input_arg(s) for s in (args.input or []))
    module, bound = _load(args, given)
    inputs = make_inputs(module, given, args.random_inputs, args.seed, bound)
    t0 = time.perf_counter()
    outs = interpret(module, inputs)
    dt = time.perf_counter() - t0
    print(f"ran {args.model} with the reference interpreter in {dt * 1e3:.1f} ms")
    for n, a in outs.items():
        print(_summary(n, a))
    if args.output_dir:
        d = Path(args.output_dir)
        d.mkdir(parents=True, exist_ok=True)
        for n, a in outs.items():
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in n)
            np.save(d / f"{safe}.npy", a)
        print(f"wrote {len(outs)} outputs to {d}/")
    if args.compare:
        if Path(args.model).suffix == ".mir":
            _err("--compare onnxruntime needs the .onnx model")
            return EXIT_USER
        feeds = dict(given)
        feeds.update(inputs)
        ref = onnxruntime_outputs(args.model, feeds)
        rows = compare(outs, ref, args.rtol, args.atol)
        print(f"compare with onnxruntime (rtol {args.rtol:g}, atol {args.atol:g}):")
        for r in rows:
            if "why" in r:
                print(f"  {r['name']}: MISMATCH ({r['why']})")
            else:
                print(f"  {r['name']}: max abs error {r['max_abs']:.3g}, max rel error "
                      f"{r['max_rel']:.3g}: {'ok' if r['ok'] else 'MISMATCH'}")
        return EXIT_OK if all(r["ok"] for r in rows) else EXIT_CHECK
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from minicc.demo import run_demo

    return EXIT_OK if run_demo(args.model) else EXIT_CHECK


def cmd_ops(args: argparse.Namespace) -> int:
    from minicc.frontend.onnx_import import CONVERTERS
    from minicc.ir import OPS

    md = args.format == "md"
    if md:
        print("| op | fusion kind | operands | attributes | doc |\n|---|---|---|---|---|")
    for name in sorted(OPS):
        d = OPS[name]
        lo, hi = d.inputs
        arity = str(lo) if lo == hi else f"{lo}+" if hi < 0 else f"{lo}-{hi}"
        attrs = ", ".join(f"{k}:{a.type}" for k, a in d.attrs.items())
        if md:
            print(f"| {name} | {d.kind.name.lower()} | {arity} | {attrs} | {d.doc} |")
        else:
            print(f"{name:18} {d.kind.name.lower():10} {arity:5} {attrs}")
    convs = [f"{dom + '::' if dom else ''}{op} (opsets {', '.join(str(c.since) for c in cs)}+)"
             for (dom, op), cs in sorted(CONVERTERS.items())]
    print(f"\n{len(OPS)} IR ops. {len(convs)} ONNX op types have converters:")
    print("  " + "\n  ".join(convs))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minicc", description="minicc: a deep-learning compiler. "
                                "ONNX in, minicc IR, native code out.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def shape_opt(q: argparse.ArgumentParser) -> None:
        q.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                       help="fix an input's shape (symbols allowed: x=N,3,224,224); repeatable")

    q = sub.add_parser("import", help="import an ONNX model and print (or write) its IR",
                       description="Import MODEL.onnx into minicc IR. Prints the IR, or with -o "
                       "writes OUT.mir and its weights to OUT.npz.")
    q.add_argument("model", metavar="MODEL.onnx")
    q.add_argument("-o", "--output", metavar="OUT.mir", help="write the IR here (weights beside "
                   "it as .npz)")
    shape_opt(q)
    q.add_argument("--input-value", action="append", metavar="NAME=FILE.npy",
                   help="bind an input to a constant value (it leaves the signature)")
    q.add_argument("--locs", action="store_true", help="print source locations (ONNX node names)")
    q.set_defaults(fn=cmd_import)

    q = sub.add_parser("run", help="run a model (.onnx or .mir) and print its outputs",
                       description="Run MODEL with the reference interpreter.")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input; "
                   "repeatable")
    q.add_argument("--random-inputs", action="store_true", help="random values for inputs not "
                   "given")
    q.add_argument("--seed", type=int, default=0, help="seed for --random-inputs (default 0)")
    q.add_argument("--output-dir", metavar="DIR", help="save each output as DIR/NAME.npy")
    q.add_argument("--compare", choices=["onnxruntime"], help="also run onnxruntime and print "
                   "the max abs/rel error of each output")
    q.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    q.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    shape_opt(q)
    q.set_defaults(fn=cmd_run)

    q = sub.add_parser("demo", help="run a real model shipped with onnx and check its output",
                       description="Import and run one of onnx's light_* models on the input "
                       "arange(n)/n and compare with the output shipped beside it.")
    from minicc.demo import LIGHT_MODELS

    q.add_argument("--model", default="resnet50", choices=LIGHT_MODELS,
                   help="which light model (default resnet50)")
    q.set_defaults(fn=cmd_demo)

    q = sub.add_parser("ops", help="list the IR ops and ONNX converters",
                       description="List the op registry: fusion kind, operands, attributes.")
    q.add_argument("--format", choices=["text", "md"], default="text")
    q.set_defaults(fn=cmd_ops)
    return p


def _version() -> str:
    from minicc import __version__

    return f"minicc {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except MiniccError as e:
        if args.debug:
            traceback.print_exc()
        _err(str(e))
        return EXIT_USER
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001  (the CLI boundary: report instead of a traceback)
        if args.debug:
            traceback.print_exc()
        cmd = " ".join(["minicc", "--debug"] + list(argv if argv is not None else sys.argv[1:]))
        _err(f"internal error: {type(e).__name__}: {e}\nThis is a bug in minicc; please report "
             f"it with the output of: {cmd}")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())

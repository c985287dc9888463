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


def _compile_options(args: argparse.Namespace, dump: tuple[str, ...] = ()):  # type: ignore
    from minicc import CompileOptions

    return CompileOptions(target=args.target, cpu=args.cpu, cuda_arch=args.cuda_arch,
                          opt_level=args.opt_level, threads=args.threads,
                          input_shapes=_shapes(args), dump=dump,
                          profile=getattr(args, "profile", False),
                          verify_each=args.verify_each, tuning_log=args.tuning_log,
                          precision=_storage_precision(args),
                          memory_budget=getattr(args, "memory_budget", None))


def _storage_precision(args: argparse.Namespace) -> str:
    """The compile's own precision: fp16, tf32 or fp32 (int8 and mixed quantize first)."""
    p = getattr(args, "precision", "fp32")
    return p if p in ("fp16", "tf32") else "fp32"


def _size(text: str) -> int:
    from minicc.resources import parse_size

    try:
        return parse_size(text)
    except MiniccError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from minicc.api import interpret
    from minicc import compile, load
    from minicc.tools import (compare, import_for_inputs, load_input_arg, make_inputs,
                              onnxruntime_outputs)

    given = dict(load_input_arg(s) for s in (args.input or []))
    cm = None
    if Path(args.model).suffix == ".mcc":
        if args.interp:
            _err("--interp needs the model (.onnx or .mir), not a compiled .mcc artifact")
            return EXIT_USER
        cm = load(args.model, args.threads)
        fake = _Signature(cm.artifact.inputs if not hasattr(cm, "signature") else
                          _concrete(cm.signature, given, _shapes(args)))
        inputs = make_inputs(fake, given, args.random_inputs, args.seed)  # type: ignore[arg-type]
        how = f"compiled artifact ({cm.threads} threads)"
        run = cm.run
    else:
        module, bound = _load(args, given)
        inputs = make_inputs(module, given, args.random_inputs, args.seed, bound)
        if args.interp:
            how = "the reference interpreter"
            run = lambda x: interpret(module, x)  # noqa: E731
        else:
            t = time.perf_counter()
            if not all(v.type.is_static for v in module.main.inputs):
                # dynamic dims: compile for the shapes of the inputs this run has
                module, _ = import_for_inputs(args.model, given, {
                    n: tuple(a.shape) for n, a in inputs.items() if n in module.main.input_names})
            cm = compile(module, options=_compile_options(args))
            how = f"compiled code ({cm.threads} threads; compiled in " \
                  f"{time.perf_counter() - t:.2f} s{', cache hit' if cm.report.cache_hit else ''})"
            run = cm.run
    if args.emulate:
        if args.interp:
            _err("--emulate runs the compiled CUDA C and --interp the reference interpreter: "
                 "give one of them")
            return EXIT_USER
        if cm is None or cm.target != "cuda":
            _err("--emulate runs CUDA C on this CPU: give --target cuda (or a CUDA .mcc)")
            return EXIT_USER
        from minicc.api import emulate_cuda

        run = emulate_cuda(cm).run
        how = "its CUDA C on this CPU (minicc.emulate_cuda: no timing meaning)"
    t0 = time.perf_counter()
    outs = run(inputs)
    dt = time.perf_counter() - t0
    print(f"ran {args.model} with {how} in {dt * 1e3:.2f} ms")
    for n in cm.report.notes if hasattr(cm, "signature") else ():   # a dynamic model's
        print(f"minicc: note: {n}", file=sys.stderr)
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
        if Path(args.model).suffix != ".onnx":
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


def _concrete(signature: list, given: dict, shapes: dict) -> list:
    """A dynamic model's signature made concrete for random inputs: a given input's own
    shape, else --input-shape, else each dynamic dim at its lower bound (at least 1)."""
    out = []
    for n, dt, dims in signature:
        if n in given:
            s = tuple(given[n].shape)
        elif n in shapes:
            s = tuple(shapes[n])
            if not all(isinstance(d, int) for d in s):
                raise MiniccError(f"--input-shape {n}=...: give whole numbers to run with")
        else:
            s = tuple(d if isinstance(d, int) else max(1, d.lo) for d in dims)
        out.append((n, dt, s))
    return out


class _Signature:
    """The input signature of a compiled artifact, shaped like a Module for make_inputs."""

    def __init__(self, inputs: tuple) -> None:
        from minicc.ir import DType, TensorType, Value

        vals = tuple(Value(TensorType(DType.parse(d), tuple(s)), None) for _, d, s in inputs)
        self.main = type("Sig", (), {"input_names": [n for n, _, _ in inputs],
                                     "inputs": vals, "name": "main"})()


def cmd_compile(args: argparse.Namespace) -> int:
    from minicc import compile
    from minicc.options import STAGES

    from minicc.targets import TARGETS, get_target

    own = get_target(args.target).dumps
    stages: tuple[str, ...] = ()
    for d in args.dump_ir or []:
        for s in d.split(","):
            if s == "all":
                stages += tuple(x for x in STAGES if x in own or not any(
                    x in t.dumps for t in TARGETS.values()))
            elif s not in STAGES:
                _err(f"unknown stage '{s}' for --dump-ir (stages: {', '.join(STAGES)}, all)")
                return EXIT_USER
            else:
                stages += (s,)
    if args.explain_fusion and "fusion" not in stages:
        stages += ("fusion",)
    t = time.perf_counter()
    model = args.model
    if args.precision in ("int8", "mixed"):
        from minicc.quantization import quantize

        if args.calib is None:
            raise MiniccError(f"--precision {args.precision} needs --calib DATA (calibration "
                              "batches: .npy/.npz files, a folder of them, or random:N)")
        if args.precision == "mixed" and not args.keep_float:
            raise MiniccError("--precision mixed needs --keep-float NODE ... (the layers to "
                              "leave in float; `minicc quantize --analyze --target-error E` "
                              "proposes them)")
        model = quantize(args.model, args.calib, args.method, keep_float=args.keep_float or (),
                         input_shapes=_shapes(args), threads=args.threads,
                         log=lambda s: print(f"minicc: {s}", file=sys.stderr)).module
    cm = compile(model, options=_compile_options(args, stages))
    dt = time.perf_counter() - t
    for stage, text in cm.report.dumps.items():
        if args.dump_dir:
            d = Path(args.dump_dir)
            d.mkdir(parents=True, exist_ok=True)
            fname = "".join(c if c.isalnum() or c in "._-" else "_" for c in stage)
            ext = {"llvm": ".ll", "asm": ".s"}.get(stage, ".mir" if stage in (
                "imported",) or stage.startswith("after") else ".txt")
            (d / f"{fname}{ext}").write_text(text)
        else:
            print(f"// ----- {stage} -----")
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.dump_dir and cm.report.dumps:
        print(f"wrote {len(cm.report.dumps)} dumps to {args.dump_dir}/", file=sys.stderr)
    for n in cm.report.notes:
        print(f"minicc: note: {n}", file=sys.stderr)
    print(cm.summary())
    print(f"total compile time {dt:.2f} s")
    if args.output:
        p = cm.save(args.output)
        print(f"wrote {p}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from minicc.bench import bench_gemm, bench_model, geomean

    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        _err(f"--threads {args.threads}: give thread counts of 1 or more, comma-separated "
             "(1,2)")
        return EXIT_USER
    if args.gemm is not None and args.gemm < 1:
        _err(f"--gemm {args.gemm}: the matmul size N must be at least 1")
        return EXIT_USER
    if args.gemm:
        for th in threads:
            bench_gemm(args.gemm, th, args.repeat)
        return EXIT_OK
    if not args.model:
        _err("give a model to benchmark (or --gemm N)")
        return EXIT_USER
    missing = [m for m in args.model if not Path(m).is_file()]
    if missing:      # before minutes of benchmarking the others
        _err(f"no such model file: {', '.join(missing)}")
        return EXIT_USER
    vs = tuple(dict.fromkeys(args.vs or ["onnxruntime"]))
    rows = []
    for m in args.model:
        rows += bench_model(m, Path(m).stem, threads, args.repeat,
                            randomize=not args.no_randomize, input_shapes=_shapes(args), vs=vs,
                            batch=args.batch, tuning_log=args.tuning_log)
    for th in threads:
        rs = [r for r in rows if r.threads == th]
        print(f"threads {th}: geometric mean over {len(rs)} model(s): " + ", ".join(
            f"minicc/{v} {geomean([r.ratio_to(v) for r in rs]):.2f}x"
            for v in ("onnxruntime",) + tuple(x for x in vs if x != "onnxruntime")))
        if args.tuning_log:
            print(f"threads {th}: tuned: " + ", ".join(
                f"minicc-tuned/{v} {geomean([r.ratio_of('minicc-tuned', v) for r in rs]):.2f}x"
                for v in ("minicc",) + ("onnxruntime",) + tuple(x for x in vs
                                                                  if x != "onnxruntime")))
    return EXIT_OK if all(r.ok for r in rows) else EXIT_CHECK


def cmd_opt(args: argparse.Namespace) -> int:
    from minicc.ir.parser import parse
    from minicc.ir.passes.pipeline import run_passes
    from minicc.ir.printer import print_module
    from minicc.tools import load_mir, save_mir

    if args.input == "-":
        module = parse(sys.stdin.read(), path="<stdin>")
    else:
        module = load_mir(args.input)
    names = [p for p in args.passes.split(",") if p]
    out = run_passes(module, names, verify_each=True)
    if args.output and args.output != "-":
        save_mir(out, args.output)
    else:
        sys.stdout.write(print_module(out))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from minicc.demo import run_demo

    return EXIT_OK if run_demo(args.model, interpret_too=args.interp) else EXIT_CHECK


def cmd_analyze(args: argparse.Namespace) -> int:
    import json

    from minicc import analyze
    from minicc.ir.cost import format_analysis

    a = analyze(args.model, input_shapes=_shapes(args), opt_level=args.opt_level)
    if args.json:
        print(json.dumps(a.as_dict(), indent=1))
    else:
        sys.stdout.write(format_analysis(a, ops=args.ops))
    return EXIT_OK


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from minicc.profile import format_profile, plot_roofline, profile, write_trace
    from minicc.tools import load_input_arg

    given = dict(load_input_arg(s) for s in (args.input or []))
    p = profile(args.model, inputs=given or None, repeat=args.repeat,
                options=_compile_options(args))
    if args.json:
        print(json.dumps(p.as_dict(), indent=1))
    else:
        sys.stdout.write(format_profile(p, args.top))
    if args.trace:
        print(f"wrote {write_trace(p, args.trace)} (open it in https://ui.perfetto.dev or "
              "chrome://tracing)", file=sys.stderr)
    if args.plot:
        print(f"wrote {plot_roofline(p, args.plot)}", file=sys.stderr)
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from minicc.tune import tune

    o = _compile_options(args)
    from dataclasses import replace

    r = tune(args.model, args.log, budget_trials=args.budget_trials,
             budget_seconds=args.budget_seconds, seed=args.seed,
             options=replace(o, tuning_log=None))
    sys.stdout.write(r.table())
    print(f"use it: minicc compile {args.model} --tuning-log {args.log}", file=sys.stderr)
    return EXIT_OK


def cmd_quantize(args: argparse.Namespace) -> int:
    from minicc.quantization import quantize
    from minicc.tools import save_mir

    if args.calib is None:
        raise MiniccError("quantize needs --calib DATA (.npy/.npz files, a folder of them, or "
                          "random:N for a smoke test)")
    q = quantize(args.model, args.calib, args.method, per_channel=not args.per_tensor,
                 symmetric=args.symmetric, keep_float=args.keep_float or (),
                 percentile=args.percentile, depthwise=not args.float_depthwise,
                 input_shapes=_shapes(args), threads=args.threads,
                 log=lambda s: print(s, file=sys.stderr))
    wn = min(60, max([len("layer")] + [len(n) for n in q.layers]))
    print(f"{'layer':<{wn}} {'range':>24} {'scale':>10} {'zp':>4}")
    for name in q.layers:
        lo, hi = q.ranges[name]
        p = q.params[name]
        print(f"{name[:wn]:<{wn}} [{lo:>10.4g}, {hi:>10.4g}] {p.scale:>10.4g} "
              f"{p.zero_point:>4}")
    if args.analyze:
        table = q.sensitivity()
        print(f"\nsensitivity: each layer quantized alone, error of the output against the "
              f"float model on {len(q.feeds)} calibration batches, worst first")
        print(f"{'layer':<{wn}} {'op':<7} {'rel L2':>10} {'top-1':>7}")
        for r in table:
            t = f"{100 * r.top1:.1f}%" if r.top1 is not None else "-"
            print(f"{r.name[:wn]:<{wn}} {r.op:<7} {r.rel_l2:>10.3e} {t:>7}")
        if args.target_error is not None:
            keep, err = q.propose_float(args.target_error, table)
            print(f"\nto reach relative L2 error <= {args.target_error:g}: keep {len(keep)} "
                  f"layer(s) in float ({', '.join(keep) or 'none'}): error {err:.3e}")
            if args.apply:
                q = q.with_float(keep)
            else:
                print("(--apply writes the model with them in float)")
    e, t = q.error()
    print(f"\nquantized model against float on the calibration set: relative L2 {e:.3e}"
          + (f", top-1 agreement {100 * t:.1f}%" if t is not None else ""))
    if args.output:
        p = save_mir(q.module, args.output)
        print(f"wrote {p}", file=sys.stderr)
    if args.export_qdq:
        from minicc.onnx_export import export_qdq

        p = export_qdq(q, args.export_qdq)
        print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


def cmd_viz(args: argparse.Namespace) -> int:
    from minicc.report import write_graph

    p = write_graph(args.model, args.stage, args.output, input_shapes=_shapes(args),
                    opt_level=args.opt_level)
    print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from minicc.report import html_report

    p = html_report(args.model, args.output, repeat=args.repeat, options=_compile_options(args))
    print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


def cmd_peaks(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from minicc.codegen.llvm.peaks import machine_peaks

    p = machine_peaks(refresh=args.refresh)
    if args.json:
        print(json.dumps(asdict(p), indent=1))
        return EXIT_OK
    print(f"{p.cpu}, {p.cores} cores, {p.vector_bits}-bit vectors (measured {p.measured})")
    print(f"  FMA peak     1 core  {p.fma_gflops_1:8.1f} GFLOP/s   {p.cores} cores "
          f"{p.fma_gflops_all:8.1f} GFLOP/s")
    if p.int8_gops_1 > 0:
        print(f"  int8 dot     1 core  {p.int8_gops_1:8.1f} GOP/s     {p.cores} cores "
              f"{p.int8_gops_all:8.1f} GOP/s     (vpdpbusd, u8 x s8)")
    print(f"  memory copy  1 core  {p.copy_gbs_1:8.1f} GB/s       {p.cores} cores "
          f"{p.copy_gbs_all:8.1f} GB/s   (read + write)")
    print(f"  ridge point  {p.fma_gflops_1 / p.copy_gbs_1:.1f} FLOP/byte on 1 core, "
          f"{p.fma_gflops_all / p.copy_gbs_all:.1f} on {p.cores}")
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    from minicc.resources import format_bytes
    from minicc.runtime.cache import CompileCache

    c = CompileCache()
    if args.clear:
        n = len(c.entries())
        c.clear()
        print(f"removed {n} entries from {c.dir}")
    elif args.trim is not None:
        from minicc.errors import MiniccError
        from minicc.resources import parse_size

        try:
            size = parse_size(args.trim)
        except MiniccError:
            raise MiniccError(f"--trim {args.trim!r} is not a size: give bytes or a number "
                              "with K, M, G or T (e.g. 1G)") from None
        print(f"freed {format_bytes(c.trim(size))}")
    print(c.describe())
    return EXIT_OK


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
    print("\nAn op without a converter is inlined from the function body ONNX defines for it "
          "(Attention,\nRotaryEmbedding, ...); failing that it runs on the host through "
          "onnx.reference (onnx_node)\nwhen ONNX shape inference gives its outputs known ranks "
          "(a dim only the data decides is\nleft to run time); otherwise the model is refused. "
          "If, Loop and Scan become region ops\n(if, loop, scan) whose bodies compile on their "
          "own.")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minicc", description="minicc: a deep-learning compiler. "
                                "ONNX in, minicc IR, native code out.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    p.add_argument("--help-env", action="store_true", help="list the debug environment variables")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def shape_opt(q: argparse.ArgumentParser) -> None:
        q.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                       help="fix an input's shape (symbols allowed: x=N,3,224,224; for compile, "
                       "ranges too: x=1..16,3,224,224); repeatable")

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

    def compile_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--target", default="llvm", choices=["llvm", "cpu", "cuda"],
                       help="code generator: llvm (this CPU; default) or cuda (CUDA C compiled "
                       "with NVRTC; compiling needs no GPU, running does)")
        q.add_argument("--cpu", default="native", metavar="NAME",
                       help="LLVM CPU to compile for: native (this machine; default), a psABI "
                       "level (x86-64-v3, x86-64-v4) or a CPU name (skylake-avx512, znver4)")
        q.add_argument("--cuda-arch", default="sm_90",
                       help="GPU architecture for --target cuda (default sm_90)")
        q.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3],
                       help="graph passes and templates (0: none, 3: all; default 3)")
        q.add_argument("--threads", type=int, default=None,
                       help="threads to compile and run for (default: all cores)")
        q.add_argument("--verify-each", action="store_true",
                       help="verify the graph IR after every pass")
        q.add_argument("--tuning-log", metavar="LOG.jsonl",
                       help="schedule kernels with the best records of a `minicc tune` log "
                       "(records measured on other machines are ignored)")
        q.add_argument("--memory-budget", metavar="SIZE", type=_size,
                       help="refuse a model needing more memory than SIZE (8G, 512M; default "
                       "$MINICC_MEMORY_BUDGET, else 3/4 of this machine's memory)")

    q = sub.add_parser("compile", help="compile a model for this CPU",
                       description="Compile MODEL (.onnx or .mir) to native code: graph passes, "
                       "fusion, scheduled loop IR, LLVM (or CUDA C). Prints a summary; -o writes "
                       "an artifact that `minicc run OUT.mcc` and minicc.load(\"OUT.mcc\") run "
                       "without recompiling. A model whose inputs keep dynamic dims (no "
                       "--input-shape, or ranges such as x=1..16,3,224,224) compiles one "
                       "specialization per input shape when it first sees it; -o then keeps "
                       "the model and every specialization compiled so far.")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("-o", "--output", metavar="OUT.mcc", help="write the compiled artifact")
    compile_opts(q)
    shape_opt(q)
    q.add_argument("--dump-ir", action="append", metavar="STAGE",
                   help="print the IR after a stage: imported, passes (after each graph "
                   "pass), fusion (groups), compute (each group's inlined definition), loops "
                   "(each kernel's loop nest before and after scheduling, with its schedule), "
                   "memory (arena plan), llvm, asm, cuda (CUDA C), or all; repeatable or "
                   "comma-separated")
    q.add_argument("--dump-dir", metavar="DIR", help="write dumps to files in DIR")
    q.add_argument("--explain-fusion", action="store_true",
                   help="list every fusion refusal with its reason")
    q.add_argument("--profile", action="store_true",
                   help="one native entry per kernel (for per-kernel timing)")
    q.add_argument("--precision", default="fp32",
                   choices=["fp32", "fp16", "tf32", "int8", "mixed"],
                   help="fp32 (default); fp16: tensors between kernels and weights stored as "
                   "f16, computed in f32 (with --target cuda, sm_80+: GEMMs on FP16 tensor "
                   "cores, f32 accumulation); tf32: --target cuda only, GEMMs on TF32 tensor "
                   "cores; int8: quantize first (needs --calib; see `minicc quantize`); mixed: "
                   "int8 with the --keep-float layers in float")
    q.add_argument("--calib", metavar="DATA", help="calibration data for --precision int8")
    q.add_argument("--method", default="entropy", choices=["minmax", "entropy", "percentile"],
                   help="calibrator for --precision int8 (default entropy)")
    q.add_argument("--keep-float", nargs="+", metavar="NODE",
                   help="with --precision int8/mixed: ONNX nodes left in float")
    q.set_defaults(fn=cmd_compile)

    q = sub.add_parser("run", help="run a model (.onnx, .mir or .mcc) and print its outputs",
                       description="Run MODEL: compiled to native code (default) or with the "
                       "reference interpreter (--interp).")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("--interp", action="store_true", help="use the reference interpreter")
    q.add_argument("--emulate", action="store_true", help="with --target cuda: run the "
                   "generated CUDA C on this CPU (host C++ compiler; checks the kernels "
                   "without a GPU)")
    compile_opts(q)
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

    q = sub.add_parser("bench", help="benchmark against onnxruntime (and numpy for --gemm)",
                       description="Median (min..max) latency of minicc and the runtimes of --vs "
                       "in one process on the same inputs, warmed up, calls alternated, outputs "
                       "checked against onnxruntime, and the ratios. ConstantOfShape weights "
                       "are replaced by random values of the same scale unless --no-randomize.")
    q.add_argument("model", nargs="*", metavar="MODEL.onnx")
    q.add_argument("--vs", action="append", choices=["onnxruntime", "openvino"],
                   help="runtimes to compare with (repeatable; default onnxruntime, always run "
                   "as the reference for the outputs)")
    q.add_argument("--batch", type=int, default=None,
                   help="batch size (for models with a dynamic first dimension)")
    q.add_argument("--tuning-log", metavar="LOG.jsonl",
                   help="also run minicc tuned with this `minicc tune` log (minicc-tuned)")
    q.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    q.add_argument("--repeat", type=int, default=20, help="timed runs after warm-up (default 20)")
    q.add_argument("--no-randomize", action="store_true", help="keep splat weights as they are")
    q.add_argument("--gemm", type=int, metavar="N",
                   help="benchmark an N x N x N matmul vs numpy, onnxruntime and (where the "
                   "mkl wheel is installed) Intel MKL, each as a share of the FMA peak")
    shape_opt(q)
    q.set_defaults(fn=cmd_bench)

    q = sub.add_parser("analyze", help="FLOPs, parameters and bytes per op and per kernel",
                       description="Count FLOPs (a multiply-add is 2), parameters, bytes read "
                       "and written and arithmetic intensity of every op and every fused kernel "
                       "of MODEL (.onnx or .mir), from the op registry's cost functions, after "
                       "the graph passes; fused intermediates are not counted for kernels.")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("--json", action="store_true", help="print JSON instead of tables")
    q.add_argument("--ops", action="store_true", help="also list every op (text output)")
    q.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3],
                   help="graph passes before counting (default 3, as compile)")
    shape_opt(q)
    q.set_defaults(fn=cmd_analyze)

    q = sub.add_parser("profile", help="time every kernel, on this machine's roofline",
                       description="Compile MODEL with one entry per kernel and time each over "
                       "--repeat runs: median time, share, the ops fused, GFLOP/s and GB/s, "
                       "and the roofline bound at its arithmetic intensity (FLOPs and bytes "
                       "from the op registry, roofs from `minicc peaks`), slowest first.")
    q.add_argument("model", metavar="MODEL")
    compile_opts(q)
    shape_opt(q)
    q.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input (default: random inputs); repeatable")
    q.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    q.add_argument("--top", type=int, default=None, help="show only the N slowest")
    q.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace (Perfetto)")
    q.add_argument("--plot", metavar="ROOFLINE.png", help="draw the roofline (matplotlib)")
    q.add_argument("--json", action="store_true", help="print JSON instead of the table")
    q.set_defaults(fn=cmd_profile)

    q = sub.add_parser("tune", help="search each kernel's schedule knobs; log the timings",
                       description="Autotune MODEL: for every kernel (once per workload), "
                       "compile and time candidates from its schedule's knob space (random "
                       "points, then mutations of the best), each checked against the default "
                       "schedule's output, in a worker process with a timeout. Every "
                       "measurement goes to LOG (JSON lines; a later run continues from it); "
                       "`minicc compile --tuning-log LOG` uses the best records.")
    q.add_argument("model", metavar="MODEL")
    compile_opts(q)
    shape_opt(q)
    q.add_argument("--log", default="tuning.jsonl", metavar="LOG.jsonl",
                   help="the tuning log (default tuning.jsonl)")
    b = q.add_mutually_exclusive_group()
    b.add_argument("--budget-trials", type=int, default=None, metavar="N",
                   help="candidates to time in all (default: 32 per workload)")
    b.add_argument("--budget-seconds", type=float, default=None, metavar="S",
                   help="stop after S seconds")
    q.add_argument("--seed", type=int, default=0, help="random seed of the search")
    q.set_defaults(fn=cmd_tune)

    q = sub.add_parser("quantize", help="INT8 post-training quantization with calibration",
                       description="Calibrate MODEL on --calib (the float model runs compiled "
                       "over the batches, histograms collected per activation), then rewrite "
                       "its convolutions and matmuls to INT8: symmetric s8 weights per output "
                       "channel, u8 activations per tensor, int32 accumulation, requantization "
                       "in the fused epilogue (VNNI kernels where the CPU has them). Prints each "
                       "layer's range and scale and the error against the float model.")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("--calib", metavar="DATA", help=".npy (one input) or .npz (inputs by name) "
                   "files, a folder of them, or random:N")
    q.add_argument("--method", default="entropy", choices=["minmax", "entropy", "percentile"],
                   help="calibrator (default entropy: KL over a 2048-bin histogram)")
    q.add_argument("--percentile", type=float, default=99.99, help="for --method percentile "
                   "(default 99.99)")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--per-channel", action="store_true", default=True,
                   help="one weight scale per output channel (the default)")
    g.add_argument("--per-tensor", action="store_true", help="one weight scale per layer")
    q.add_argument("--symmetric", action="store_true",
                   help="symmetric activations (zero point 128 in u8); default asymmetric")
    q.add_argument("--keep-float", nargs="+", metavar="NODE",
                   help="ONNX node names to leave in float (mixed precision)")
    dw = q.add_mutually_exclusive_group()
    dw.add_argument("--int8-depthwise", action="store_true", help="quantize depthwise "
                    "convolutions too (the default)")
    dw.add_argument("--float-depthwise", action="store_true", help="leave depthwise "
                    "convolutions in float (where per-channel int8 loses most accuracy, if "
                    "anywhere; with AVX-512 VNNI and VBMI they run faster in int8)")
    q.add_argument("--analyze", action="store_true", help="sensitivity: quantize one layer at "
                   "a time and report the error each causes")
    q.add_argument("--target-error", type=float, metavar="E", help="with --analyze: propose "
                   "the fewest layers to keep in float for a relative L2 error <= E")
    q.add_argument("--apply", action="store_true", help="with --target-error: write the model "
                   "with the proposed layers in float")
    q.add_argument("-o", "--output", metavar="MODEL.int8.mir", help="write the int8 IR")
    q.add_argument("--export-qdq", metavar="MODEL.qdq.onnx",
                   help="write a QDQ ONNX model (QuantizeLinear/DequantizeLinear) for other "
                   "runtimes")
    q.add_argument("--threads", type=int, default=None)
    shape_opt(q)
    q.set_defaults(fn=cmd_quantize)

    q = sub.add_parser("viz", help="draw the graph at a stage (DOT, SVG or HTML)",
                       description="Draw MODEL's graph after a stage: imported, passes (after "
                       "the graph passes) or fused (kernels as clusters, named as the compiler "
                       "names them). Nodes are ops with their result types. -o decides the "
                       "format: .dot, .svg (needs Graphviz's dot) or .html (self-contained).")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("--stage", default="fused", choices=["imported", "passes", "fused"])
    q.add_argument("-o", "--output", required=True, metavar="GRAPH.svg|.dot|.html")
    q.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3])
    shape_opt(q)
    q.set_defaults(fn=cmd_viz)

    q = sub.add_parser("report", help="one self-contained HTML page about a compiled model",
                       description="Compile and profile MODEL and write one HTML page with the "
                       "summary, the per-kernel profile, the roofline chart, the fused graph "
                       "and the compile timings; nothing in it is fetched from the network.")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("-o", "--output", required=True, metavar="REPORT.html")
    compile_opts(q)
    shape_opt(q)
    q.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    q.set_defaults(fn=cmd_report)

    q = sub.add_parser("peaks", help="this machine's FMA peak and memory bandwidth",
                       description="Measure (once per host, then cached) the FMA throughput of "
                       "one core and of all cores with a generated loop of independent FMA "
                       "chains at the host's vector width, and the memory bandwidth of a "
                       "generated streaming copy: the roofs `minicc profile` uses.")
    q.add_argument("--refresh", action="store_true", help="measure again")
    q.add_argument("--json", action="store_true")
    q.set_defaults(fn=cmd_peaks)

    q = sub.add_parser("cache", help="the compile cache: where, how big; clear or trim it",
                       description="Show the compile cache ($MINICC_CACHE_DIR, default "
                       "~/.cache/minicc): its entries and size, and the size it is kept under "
                       "($MINICC_CACHE_SIZE, default 4G; the least recently used entries go "
                       "first). Saved .mcc files are never touched.")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--clear", action="store_true", help="remove every entry")
    g.add_argument("--trim", metavar="SIZE",
                   help="remove the least recently used entries until the rest fit in 3/4 of "
                   "SIZE (e.g. 1G), if they take more")
    q.set_defaults(fn=cmd_cache)

    q = sub.add_parser("opt", help="run graph passes on IR text",
                       description="Read IR (a .mir file or - for stdin), run passes, print or "
                       "write the result.")
    q.add_argument("input", metavar="IN.mir")
    from minicc.ir.passes.pipeline import PASSES

    q.add_argument("--passes", required=True,
                   help=f"comma-separated: {', '.join(PASSES)}")
    q.add_argument("-o", "--output", metavar="OUT.mir")
    q.set_defaults(fn=cmd_opt)

    q = sub.add_parser("demo", help="run a real model shipped with onnx and check its output",
                       description="Import, compile and run one of onnx's light_* models on the "
                       "input arange(n)/n and compare with the output shipped beside it.")
    from minicc.demo import LIGHT_MODELS

    q.add_argument("--model", default="resnet50", choices=LIGHT_MODELS,
                   help="which light model (default resnet50)")
    q.add_argument("--interp", action="store_true",
                   help="also run the reference interpreter and check it")
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
    if argv is None:
        argv = sys.argv[1:]
    if "--help-env" in argv:
        from minicc.env import FLAGS

        for k, v in FLAGS.items():
            print(f"{k:26} {v}")
        return EXIT_OK
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
    except BrokenPipeError:     # the reader went away (`minicc ... | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # noqa: BLE001  (the CLI boundary: report instead of a traceback)
        if args.debug:
            traceback.print_exc()
        cmd = " ".join(["minicc", "--debug"] + list(argv if argv is not None else sys.argv[1:]))
        _err(f"internal error: {type(e).__name__}: {e}\nThis is a bug in minicc; please report "
             f"it with the output of: {cmd}")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())

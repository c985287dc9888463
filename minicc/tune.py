"""`minicc tune`: search each kernel's declared knob space by compiling and timing candidates,
and keep every measurement in a JSON-lines log that `minicc compile --tuning-log` reads.

- Kernels with the same workload (ir/loops/tuning.py) are tuned once; their time shares add up.
- Each workload is cut out of the model as a function of its own (the group's ops and its
  weights) and compiled with the candidate's schedule (`CompileOptions.schedules`).
- A candidate is compiled, checked against the default schedule's output and timed in a worker
  process. A candidate that crashes or hangs only costs a restart of the worker (recorded
  `failed` / `timeout`); one whose first run is 3x slower than the best so far is not timed
  further (`slow`, as tinygrad's BEAM search does).
- Search: the defaults first, then random points of the space until a few are measured, then
  mutations (one or two knobs changed) of the best ones: a small evolutionary search. Trials go
  to the workload whose share of the model's time per trial spent is largest.
- The log is read first, so a tuning run continues where an earlier one stopped.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from minicc.errors import MiniccError

SLOW = 3.0              # stop timing a candidate whose first run is this much slower
TIMEOUT = 120.0         # seconds for one candidate (compile + check + time)
MIN_TIME = 0.15         # seconds of timed runs per candidate (at least 5 runs, at most 50)


# ---- cutting a kernel out of its model ------------------------------------------------------

def extract(ctx: Any) -> Any:
    """A module computing one group alone: its outside inputs as inputs, its constants kept."""
    from minicc.ir.graph import Attrs, ConstData, Function, Module, Op

    g = ctx.group
    ins = [v for v in g.inputs() if v not in ctx.consts]
    consts = [Op("const", (), (v,), Attrs(value=ConstData(ctx.consts[v], copy=False)))
              for v in g.inputs() if v in ctx.consts]
    f = Function("main", tuple(ins), tuple(consts) + tuple(g.ops), (g.output,),
                 tuple(f"in{i}" for i in range(len(ins))), ("out",))
    return Module((f,))


# ---- the worker process ---------------------------------------------------------------------

def _time(run: Callable[[], Any], cutoff: float | None) -> tuple[str, float]:
    """('ok', median seconds) over MIN_TIME of runs, or ('slow', first run) past `cutoff`."""
    t = time.perf_counter()
    run()
    first = time.perf_counter() - t
    if cutoff is not None and first > cutoff:
        return "slow", first
    ts = [first]
    while (sum(ts) < MIN_TIME or len(ts) < 5) and len(ts) < 50:
        t = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t)
    return "ok", float(np.median(ts[1:]))


class _Bench:
    """In the worker: one workload's function, inputs and reference output, and candidates."""

    def __init__(self, text: str, weights: dict, opts: Any):
        from minicc import __version__
        from minicc.ir.parser import parse
        from minicc.ir.program import build_program
        from minicc.profile import random_feeds
        from minicc.targets import get_target

        self.f = parse(text, weights=weights).main
        self.opts, self.version = opts, __version__
        self.entry = get_target(opts.target)
        self.target = self.entry.resolve(opts)
        self.build_program = build_program
        prog = build_program(self.f, self.entry.lower, self.target, opts)
        if len(prog.kernel_steps) != 1:
            raise MiniccError(f"the cut-out kernel became {len(prog.kernel_steps)} kernels")
        st = prog.kernel_steps[0]
        self.name = st.kernel.name
        from minicc.ir.loops.printer import canonical_text

        self.canonical = canonical_text(st.ctx.nest)
        self.feeds = random_feeds(prog.inputs, seed=1)
        exe = self._exe(prog)
        self.ref = exe.run(self.feeds)["out"]
        self.default = _time(self._runner(exe), None)[1]

    def _runner(self, exe: Any) -> Callable[[], Any]:
        run = getattr(exe, "runner", None)       # CPU: the native steps, nothing else
        return run(self.feeds) if run is not None else (lambda: exe.run(self.feeds))

    def _exe(self, prog: Any) -> Any:
        from minicc.driver import host_op

        art = self.entry.build(prog, self.opts, self.version)
        return self.entry.executable(art, self.version, host_op, self.opts.threads, False)

    def candidate(self, schedule: str, cutoff: float | None) -> tuple[str, float | None, str]:
        o = replace(self.opts, schedules={self.name: schedule})
        exe = self._exe(self.build_program(self.f, self.entry.lower, self.target, o))
        got = exe.run(self.feeds)["out"]
        scale = float(np.max(np.abs(self.ref))) if self.ref.size else 0.0
        if got.shape != self.ref.shape or not np.allclose(got, self.ref, rtol=1e-4,
                                                          atol=1e-5 * max(scale, 1.0)):
            err = float(np.max(np.abs(got - self.ref))) if got.shape == self.ref.shape else -1
            return "wrong", None, f"output differs from the default schedule's by {err:.3g}"
        status, t = _time(self._runner(exe), cutoff)
        return status, t, ""


def _worker_main(conn: Any) -> None:
    benches: dict[str, _Bench] = {}
    while True:
        msg = conn.recv()
        try:
            if msg[0] == "load":
                _, wid, text, weights, opts = msg
                b = benches[wid] = _Bench(text, weights, opts)
                conn.send(("ready", b.name, b.canonical, b.default))
            elif msg[0] == "try":
                _, wid, schedule, cutoff = msg
                conn.send(("result",) + benches[wid].candidate(schedule, cutoff))
            else:
                return
        except MiniccError as e:
            conn.send(("failed", str(e)))
        except Exception as e:  # noqa: BLE001  (report every failure of a candidate)
            conn.send(("failed", f"{type(e).__name__}: {e}"))


class Worker:
    """The parent's handle on the worker: a call that crashes or exceeds `timeout` kills it, a
    new one starts, and the call reports why."""

    def __init__(self, timeout: float = TIMEOUT, main: Callable[[Any], None] | None = None):
        self.timeout = timeout
        self.main = main or _worker_main         # (tests give one that crashes on purpose)
        self.loaded: dict[str, tuple] = {}
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")   # no fork of a process with OpenMP threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=self.main, args=(child,), daemon=True)
        self.proc.start()
        self.live: set[str] = set()

    def call(self, msg: tuple) -> tuple:
        try:
            self.conn.send(msg)
            if not self.conn.poll(self.timeout):
                self.restart()
                return ("timeout", f"no answer in {self.timeout:.0f} s")
            return self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self.proc.exitcode
            self.restart()
            return ("crashed", f"the worker died (exit code {code})")

    def restart(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self._start()

    def load(self, wid: str, text: str, weights: dict, opts: Any) -> tuple:
        self.loaded[wid] = (text, weights, opts)
        reply = self.call(("load", wid, text, weights, opts))
        if reply[0] == "ready":
            self.live.add(wid)
        return reply

    def trial(self, wid: str, schedule: str, cutoff: float | None) -> tuple[str, float | None,
                                                                             str]:
        if wid not in self.live:                     # after a restart
            reply = self.call(("load", wid) + self.loaded[wid])
            if reply[0] != "ready":
                return "failed", None, f"reloading the workload failed: {reply[-1]}"
            self.live.add(wid)
        reply = self.call(("try", wid, schedule, cutoff))
        if reply[0] == "result":
            return reply[1], reply[2], reply[3]
        return ("timeout" if reply[0] == "timeout" else "failed"), None, str(reply[-1])

    def close(self) -> None:
        try:
            self.conn.send(("stop",))
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


# ---- the search -----------------------------------------------------------------------------

def _key(knobs: Mapping[str, Any]) -> tuple:
    return tuple(sorted(knobs.items()))


@dataclass
class Workload:
    key: str
    ctx: Any                          # the first kernel's LowerCtx
    kernels: list[str]                # every kernel of the model with this workload
    rule: Any
    space: dict[str, tuple]
    default_ms: float = 0.0
    best_ms: float = float("inf")
    best: dict | None = None
    tried: dict[tuple, float] = field(default_factory=dict)   # knobs -> ms (inf: not good)
    trials: int = 0
    note: str = ""

    @property
    def weight(self) -> float:
        """This workload's milliseconds in one run of the model."""
        return self.default_ms * len(self.kernels)

    def proposals(self, rng: random.Random) -> Iterator[dict]:
        """Knob points not measured yet: random ones first, then mutations of the best."""
        names = list(self.space)
        for _ in range(200):
            good = sorted((ms, k) for k, ms in self.tried.items() if ms < float("inf"))
            if len(good) < 4 or rng.random() < 0.2:
                knobs = {n: rng.choice(self.space[n]) for n in names}
            else:
                base = dict(rng.choice(good[:4])[1])
                knobs = dict(base)
                for n in rng.sample(names, min(len(names), rng.choice((1, 1, 2)))):
                    knobs[n] = rng.choice(self.space[n])
            if _key(knobs) not in self.tried and self.rule.invalid(self.ctx, knobs) is None:
                yield knobs


@dataclass
class TuneReport:
    workloads: list[Workload]
    trials: int
    seconds: float
    log: str

    def table(self) -> str:
        rows = sorted(self.workloads, key=lambda w: -w.weight)
        lines = [f"  {'kernels':26} {'ops':24} {'n':>3} {'default ms':>10} {'best ms':>9} "
                 f"{'speedup':>7} {'trials':>6}"]
        for w in rows:
            best = w.best_ms if w.best_ms < float("inf") else w.default_ms
            lines.append(f"  {','.join(w.kernels)[:26]:26} {w.ctx.group.describe()[:24]:24} "
                         f"{len(w.kernels):3} {w.default_ms:10.3f} {best:9.3f} "
                         f"{w.default_ms / best if best else 1:6.2f}x {w.trials:6}"
                         + (f"  ({w.note})" if w.note else ""))
        before = sum(w.weight for w in rows)
        after = sum(min(w.best_ms, w.default_ms) * len(w.kernels) for w in rows)
        lines.append(f"kernels in one run: {before:.3f} ms with the defaults, {after:.3f} ms "
                     f"with the best ({before / after if after else 1:.2f}x), {self.trials} "
                     f"trials in {self.seconds:.0f} s; log {self.log}")
        return "\n".join(lines) + "\n"


def _progress(total: int | None, seconds: float | None) -> Callable[[str], None]:
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None and sys.stderr.isatty():
        bar = tqdm(total=total, unit="trial", file=sys.stderr, leave=True)
        return lambda s: (bar.update(1), bar.set_postfix_str(s, refresh=False))
    count = [0]

    def line(s: str) -> None:
        count[0] += 1
        if count[0] % 10 == 1:
            print(f"tune: trial {count[0]}{f'/{total}' if total else ''}: {s}",
                  file=sys.stderr, flush=True)
    return line


def tune(model: Any, log: str, budget_trials: int | None = None,
         budget_seconds: float | None = None, seed: int = 0, options: Any = None,
         timeout: float = TIMEOUT, progress: bool = True,
         worker_main: Callable[[Any], None] | None = None, **fields: Any) -> TuneReport:
    """Tune every kernel of `model` for these options; returns what improved. One of the two
    budgets stops the search (default: 32 trials per workload that takes >= 0.5% of the time)."""
    from minicc import __version__
    from minicc.driver import lower_program
    from minicc.ir.build import build_id
    from minicc.ir.loops.tuning import Record, TuningLog, kernel_workload, machine_key
    from minicc.ir.printer import print_module
    from minicc.ir.loops.trace import format_schedule
    from minicc.options import merge_options

    o = replace(merge_options(options, fields), tuning_log=None, profile=False)
    prog = lower_program(model, options=o)
    rules = _rules(prog.target)
    wl = _workloads(prog, rules, kernel_workload)
    tlog = TuningLog(log)
    machine, threads = machine_key(prog.target), prog.threads
    rng = random.Random(seed)
    report = TuneReport(list(wl.values()), 0, 0.0, log)
    show = _progress(budget_trials, budget_seconds) if progress else (lambda s: None)
    worker = Worker(timeout, worker_main)
    t0 = time.perf_counter()
    try:
        resolved = lower_options(o, prog)
        for w in wl.values():
            _load(worker, w, print_module, resolved, tlog, machine, threads)
        total = sum(w.weight for w in wl.values()) or 1.0
        todo = [w for w in wl.values() if not w.note and w.weight >= 0.005 * total]
        if budget_trials is None and budget_seconds is None:
            budget_trials = 32 * len(todo)
        while todo:
            if budget_trials is not None and report.trials >= budget_trials:
                break
            if budget_seconds is not None and time.perf_counter() - t0 >= budget_seconds:
                break
            w = max(todo, key=lambda w: w.weight / (1 + w.trials))
            knobs = next(w.proposals(rng), None)
            if knobs is None:
                todo.remove(w)                       # the whole space is measured
                continue
            text = format_schedule(w.rule.name, w.rule.steps(w.ctx, knobs))
            cutoff = SLOW * w.best_ms / 1e3 if w.best_ms < float("inf") else None
            status, secs, err = worker.trial(w.key, text, cutoff)
            ms = secs * 1e3 if secs is not None else None
            w.trials += 1
            report.trials += 1
            w.tried[_key(knobs)] = ms if status == "ok" and ms is not None else float("inf")
            if status == "ok" and ms is not None and ms < w.best_ms:
                w.best_ms, w.best = ms, knobs
            tlog.append(Record(w.key, machine, threads, w.rule.name, text, status, ms, knobs,
                               w.kernels[0], w.ctx.group.describe(), err, __version__,
                               build=build_id()))
            show(f"{w.kernels[0]} {status} {ms or 0:.3f} ms (best {w.best_ms:.3f})")
    finally:
        worker.close()
    report.seconds = time.perf_counter() - t0
    return report


def lower_options(o: Any, prog: Any) -> Any:
    """The options a workload is compiled with in the worker (threads resolved, no cache)."""
    return replace(o, threads=prog.threads, cache=False, dump=(), schedules=None,
                   input_shapes=None)


def _rules(target: Any) -> Any:
    from minicc.targets import get_target

    return get_target(target.name).rules()


def _workloads(prog: Any, rules: Any, key_of: Callable[[Any], str]) -> dict[str, Workload]:
    out: dict[str, Workload] = {}
    for st in prog.kernel_steps:
        k = key_of(st.ctx)
        if k in out:
            out[k].kernels.append(st.kernel.name)
            continue
        rule = next(r for r in rules if r.applies(st.ctx))
        out[k] = Workload(k, st.ctx, [st.kernel.name], rule, rule.space(st.ctx))
    return out


def _load(worker: Worker, w: Workload, print_module: Any, opts: Any, tlog: Any, machine: str,
          threads: int) -> None:
    """Send the workload to the worker (it times the default schedule), and take what the log
    already measured for it."""
    from minicc.ir.loops.tuning import workload_key

    m = extract(w.ctx)
    reply = worker.load(w.key, print_module(m), m.weights(), opts)
    if reply[0] != "ready":
        w.note = f"not tuned: {reply[-1]}"
        return
    _, name, canonical, secs = reply
    if workload_key(canonical, w.ctx.target, threads) != w.key:
        w.note = "not tuned: cut out of the model it lowers differently"
        return
    w.default_ms = secs * 1e3
    defaults = w.rule.defaults(w.ctx)
    w.tried[_key(defaults)] = w.default_ms
    w.best_ms, w.best = w.default_ms, defaults
    for r in tlog.measured(w.key, machine, threads):
        if not r.knobs:
            continue
        ms = r.ms if r.status == "ok" and r.ms is not None else float("inf")
        w.tried[_key(r.knobs)] = ms
        w.trials += 1
        if ms < w.best_ms:
            w.best_ms, w.best = ms, r.knobs
    if not tlog.measured(w.key, machine, threads):     # the defaults start the log
        from minicc import __version__
        from minicc.ir.build import build_id
        from minicc.ir.loops.tuning import Record
        from minicc.ir.loops.trace import format_schedule

        tlog.append(Record(w.key, machine, threads, w.rule.name,
                           format_schedule(w.rule.name, w.rule.steps(w.ctx, defaults)), "ok",
                           w.default_ms, defaults, w.kernels[0], w.ctx.group.describe(), "",
                           __version__, build=build_id()))

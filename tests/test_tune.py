"""The autotuner: it measures candidates from the knob spaces and logs them, continues from its
log, a compile with the log uses its best records (and says so), records for another machine
and damaged lines are skipped with a note, and a candidate that crashes or hangs is recorded and
the search goes on."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import minicc
from minicc.cli import main
from minicc.ir.loops.tuning import Record, TuningLog
from minicc.tune import _worker_main, tune


def small_model(path: Path) -> Path:
    """conv3x3+relu -> max_pool -> matmul: the GEMM template, the pool template, a matmul."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], rng.standard_normal(216))
    m = helper.make_tensor("m", TensorProto.FLOAT, [128, 10], rng.standard_normal(1280))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Slice", ["f", "s0", "s1", "ax"], ["h"]),
             helper.make_node("MatMul", ["h", "m"], ["y"])]
    inits = [w, m, helper.make_tensor("s0", TensorProto.INT64, [1], [0]),
             helper.make_tensor("s1", TensorProto.INT64, [1], [128]),
             helper.make_tensor("ax", TensorProto.INT64, [1], [1])]
    g = helper.make_graph(nodes, "small", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    d = tmp_path_factory.mktemp("tune")
    model, log = small_model(d / "m.onnx"), d / "log.jsonl"
    report = tune(str(model), str(log), budget_trials=8, threads=1, progress=False)
    return model, log, report


def test_tune_measures_and_logs(tuned) -> None:  # type: ignore[no-untyped-def]
    model, log, report = tuned
    assert report.trials == 8
    recs = TuningLog(log).records
    assert len(recs) == 8 + len(report.workloads)          # the defaults start the log
    assert {r.status for r in recs} <= {"ok", "slow", "wrong", "failed", "timeout"}
    assert all(r.machine.startswith("llvm:") and r.threads == 1 for r in recs)
    ok = [r for r in recs if r.status == "ok"]
    assert ok and all(r.ms and r.ms > 0 and r.schedule.startswith(r.rule + ":") for r in ok)
    rules = {w.rule.name for w in report.workloads}
    assert {"cpu.gemm", "cpu.pool"} <= rules
    assert "kernels in one run" in report.table()


def test_a_second_run_continues_from_the_log(tuned) -> None:  # type: ignore[no-untyped-def]
    model, log, _ = tuned
    before = len(TuningLog(log).records)
    again = tune(str(model), str(log), budget_trials=3, threads=1, progress=False)
    recs = TuningLog(log).records
    assert len(recs) == before + 3                          # no new default records
    assert sum(w.trials for w in again.workloads) >= 8 + 3  # the old trials count
    keys = [(r.workload, json.dumps(r.knobs, sort_keys=True)) for r in recs]
    assert len(keys) == len(set(keys))                      # nothing measured twice


def test_compile_with_the_log_uses_the_best_records(tuned) -> None:  # type: ignore
    model, log, _ = tuned
    cm = minicc.compile(str(model), threads=1, tuning_log=str(log), cache=False)
    assert any("kernels scheduled from its records" in n for n in cm.report.notes)
    best = {}
    for r in TuningLog(log).records:
        if r.status == "ok" and (r.workload not in best or r.ms < best[r.workload].ms):
            best[r.workload] = r
    used = {k["schedule"] for k in cm.artifact.summary["kernels"]}
    assert {r.schedule for r in best.values()} <= used
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = minicc.compile(str(model), threads=1, cache=False)(x=x)["y"]
    np.testing.assert_allclose(cm(x=x)["y"], ref, rtol=1e-4, atol=1e-4)


def test_foreign_and_damaged_lines_are_skipped_with_a_note(tuned, tmp_path: Path) -> None:
    model, log, _ = tuned
    other = tmp_path / "log.jsonl"
    lines = log.read_text().splitlines()
    foreign = [json.dumps({**json.loads(line), "machine": "llvm:sapphirerapids:512"})
               for line in lines[:3]]
    other.write_text("\n".join(["{not json", '{"format": 99}'] + foreign + lines) + "\n")
    cm = minicc.compile(str(model), threads=1, tuning_log=str(other), cache=False)
    text = "\n".join(cm.report.notes)
    assert "3 record(s) measured on other machines ignored" in text
    assert "skipped line 1" in text and "skipped line 2" in text
    only_foreign = tmp_path / "foreign.jsonl"
    only_foreign.write_text("\n".join(foreign) + "\n")
    cm = minicc.compile(str(model), threads=1, tuning_log=str(only_foreign), cache=False)
    assert any("0 of" in n for n in cm.report.notes)


def _crash_knob() -> str:
    """A knob value the search meets often and the defaults never take (they pack A at compile
    time for convs and per row tile for matmuls): A read in place."""
    return "pack(A, at=none)"


def crashing_worker(conn: Any) -> None:
    """A worker that dies on every candidate whose schedule reads A in place, and hangs on
    KC=32."""
    wide = _crash_knob()

    class Spy:
        def recv(self) -> Any:
            msg = conn.recv()
            if msg[0] == "try" and wide in msg[2]:
                os._exit(11)
            if msg[0] == "try" and "KC=32" in msg[2]:
                time.sleep(60)
            return msg

        def send(self, x: Any) -> None:
            conn.send(x)
    _worker_main(Spy())


def test_a_candidate_that_crashes_or_hangs_is_recorded_and_the_search_goes_on(
        tmp_path: Path) -> None:
    model, log = small_model(tmp_path / "m.onnx"), tmp_path / "log.jsonl"
    r = tune(str(model), str(log), budget_trials=14, threads=1, progress=False, timeout=5,
             worker_main=crashing_worker, seed=3)
    recs = TuningLog(log).records
    bad = [x for x in recs if _crash_knob() in x.schedule or "KC=32" in x.schedule]
    assert bad and all(x.status in ("failed", "timeout") for x in bad)
    assert any(x.status == "failed" and "died" in x.error for x in bad)
    # the search went on: other candidates ran to completion (ok, or cut off as 3x slower
    # than the best, which on a tiny kernel and a busy machine is a matter of noise)
    assert r.trials == 14 and any(x.status in ("ok", "slow") for x in recs[len(r.workloads):])


def test_cli_tune_and_compile(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, log = small_model(tmp_path / "m.onnx"), tmp_path / "t.jsonl"
    assert main(["tune", str(model), "--threads", "1", "--log", str(log),
                 "--budget-trials", "2"]) == 0
    out, err = capsys.readouterr()
    assert "speedup" in out and "--tuning-log" in err
    assert main(["compile", str(model), "--threads", "1", "--tuning-log", str(log)]) == 0
    assert "scheduled from its records" in capsys.readouterr().err


def test_a_record_that_no_longer_applies_falls_back_with_a_note(tuned, tmp_path: Path) -> None:
    model, log, _ = tuned
    bad = tmp_path / "bad.jsonl"
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    for r in recs:
        if r["rule"] == "cpu.gemm":
            r["schedule"] = "cpu.gemm: tile(MR=6, NR=33, KC=8, NC=64)"
            r["ms"] = 1e-9
    bad.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    cm = minicc.compile(str(model), threads=1, tuning_log=str(bad), cache=False)
    assert any("its tuning record does not apply" in n for n in cm.report.notes)
    assert Record.parse(bad.read_text().splitlines()[0]).format == 1


def test_records_from_another_build_are_ignored_with_a_note(tuned, tmp_path: Path
                                                          ) -> None:  # type: ignore
    """As TensorRT's timing cache is valid for one builder version only: a record measured by
    another build of minicc (its lowering may differ) schedules nothing."""
    model, log, _ = tuned
    old = tmp_path / "old.jsonl"
    lines = []
    for line in log.read_text().splitlines():
        d = json.loads(line)
        d["build"] = "0123456789abcdef"
        lines.append(json.dumps(d))
    old.write_text("\n".join(lines) + "\n")
    cm = minicc.compile(str(model), threads=1, tuning_log=str(old))
    notes = " ".join(cm.report.notes)
    assert "0 of" in notes and "from another build of minicc ignored" in notes

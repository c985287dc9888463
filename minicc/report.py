"""Pictures and reports: `minicc viz` (the graph at a stage, as DOT, SVG or HTML) and
`minicc report` (one self-contained HTML page: summary, fused graph, per-kernel profile,
roofline chart, compile timings). Nothing in the page is fetched from the network: the SVGs and
the chart are inline, the styles too.

SVG comes from Graphviz's `dot` (a Debian package: `apt-get install graphviz`) when it is
installed; without it `.dot` output still works, and the report shows the graph's DOT text.
"""

from __future__ import annotations

import base64
import html
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from minicc.errors import MiniccError

VIZ_STAGES = ("imported", "passes", "fused")


def graph_dot(model: Any, stage: str = "fused", options: Any = None, **fields: Any) -> str:
    """DOT text of the model's graph after `stage` (imported, passes, fused)."""
    from minicc.driver import _as_module
    from minicc.ir.dot import to_dot
    from minicc.ir.passes.fuse import fuse
    from minicc.ir.passes.pipeline import run_pipeline
    from minicc.options import merge_options

    if stage not in VIZ_STAGES:
        raise MiniccError(f"unknown stage '{stage}' (stages: {', '.join(VIZ_STAGES)})")
    o = merge_options(options, fields)
    m = _as_module(model, o.input_shapes)
    title = f"{Path(str(model)).stem if isinstance(model, str) else 'model'} ({stage})"
    if stage == "imported":
        return to_dot(m.main, title=title)
    m = run_pipeline(m, o.opt_level)
    if stage == "passes":
        return to_dot(m.main, title=title)
    from minicc.ir.program import check_static

    check_static(m.main, "fusing")
    return to_dot(m.main, fuse(m.main), title)


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render_svg(dot_text: str, timeout: float = 120) -> str:
    """SVG from DOT text through Graphviz."""
    exe = shutil.which("dot")
    if exe is None:
        raise MiniccError("SVG needs Graphviz's `dot` (apt-get install graphviz); write .dot "
                          "instead, or .html, which shows the DOT text without it")
    try:
        r = subprocess.run([exe, "-Tsvg"], check=False, input=dot_text, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MiniccError(f"Graphviz took more than {timeout:.0f} s to lay out the graph; "
                          "write .dot and lay it out yourself") from None
    if r.returncode != 0:
        raise MiniccError(f"Graphviz failed: {r.stderr.strip()[:500]}")
    svg = r.stdout
    return svg[svg.index("<svg"):] if "<svg" in svg else svg


def _graph_html(dot_text: str) -> str:
    if dot_available():
        return f'<div class="graph">{render_svg(dot_text)}</div>'
    return ('<p class="note">Graphviz is not installed here, so the graph is its DOT text '
            f'(paste it into any DOT viewer).</p><pre>{html.escape(dot_text)}</pre>')


def write_graph(model: Any, stage: str, out: str | Path, options: Any = None,
                **fields: Any) -> Path:
    """`minicc viz`: .dot (text), .svg (Graphviz) or .html (self-contained page)."""
    p = Path(out)
    text = graph_dot(model, stage, options, **fields)
    if p.suffix == ".dot":
        p.write_text(text)
    elif p.suffix == ".svg":
        p.write_text(render_svg(text))
    elif p.suffix in (".html", ".htm"):
        p.write_text(_page(f"{Path(str(model)).name}: {stage} graph", _graph_html(text)))
    else:
        raise MiniccError(f"cannot write a graph as '{p.suffix}': use .dot, .svg or .html")
    return p


CSS = """
body { font-family: -apple-system, Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.kv td { text-align: left; } .note { color: #666; font-size: 12px; }
.graph { overflow: auto; max-height: 900px; border: 1px solid #ddd; }
.graph svg { max-width: none; } pre { font-size: 11px; background: #f8f8f8; padding: 8px; }
.bar { background: #4c78a8; height: 10px; display: inline-block; }
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n"
            "</body></html>\n")


def _kv(rows: list[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(
        f"<tr><th class=\"l\">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in rows) + "</table>"


def _profile_table(p: Any) -> str:
    head = ("<tr><th class=\"l\">kernel</th><th class=\"l\">ops</th><th class=\"l\">output</th>"
            "<th>ms</th><th class=\"l\">share</th><th>GFLOP/s</th><th>GB/s</th>"
            "<th>FLOP/B</th><th>bound GFLOP/s</th><th>% of bound</th></tr>")
    rows = []
    top = max((k.share for k in p.kernels), default=1.0) or 1.0
    for k in p.sorted():
        rows.append(
            f"<tr><td class=\"l\">{html.escape(k.name)}</td><td class=\"l\">"
            f"{html.escape(k.ops)}</td><td class=\"l\">{html.escape(k.output)}</td>"
            f"<td>{k.ms:.3f}</td><td class=\"l\"><span class=\"bar\" style=\"width:"
            f"{max(1, round(80 * k.share / top))}px\"></span> {k.share:.1f}%</td>"
            f"<td>{k.gflops:.1f}</td><td>{k.gbs:.1f}</td><td>{k.intensity:.2f}</td>"
            f"<td>{k.bound_gflops:.1f}</td><td>{k.of_bound:.0f}%</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _roofline_svg(p: Any) -> str:
    """The roofline chart, inline (matplotlib's SVG, or a PNG as data if SVG fails)."""
    from minicc.profile import plot_roofline

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return '<p class="note">The roofline needs matplotlib (pip install matplotlib).</p>'
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        png = plot_roofline(p, Path(d) / "roofline.png").read_bytes()
    return (f'<img alt="roofline" style="max-width: 900px" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def _si(x: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def html_report(model: Any, out: str | Path, repeat: int = 20, options: Any = None,
                **fields: Any) -> Path:
    """`minicc report`: compile, profile and picture `model` on one self-contained page."""
    from minicc import __version__
    from minicc.profile import profile

    t0 = time.perf_counter()
    prof = profile(model, repeat=repeat, options=options, **fields)
    cm = prof.compiled
    s = cm.artifact.summary
    mb = 1 / (1 << 20)
    summary = _kv([
        ("model", str(model)), ("target", s.get("target", cm.target)),
        ("threads", str(prof.threads)),
        ("kernels", (f"{len(s.get('kernels', []))} (host ops: "
                    f"{', '.join(s.get('host_ops', [])) or 'none'})")),
        ("time per run", (f"{prof.run_ms:.3f} ms (kernels {prof.total_ms:.3f} ms, median of "
                         f"{repeat} runs)")),
        ("FLOPs", _si(sum(k.flops for k in prof.kernels), "FLOP")),
        ("arena", (f"{s.get('arena_bytes', 0) * mb:.2f} MiB (lower bound "
                  f"{s.get('lower_bound_bytes', 0) * mb:.2f} MiB, naive sum "
                  f"{s.get('naive_bytes', 0) * mb:.2f} MiB)")),
        ("weights", f"{s.get('weights_bytes', 0) * mb:.2f} MiB"),
        ("compile", ", ".join(f"{k} {v:.2f} s" for k, v in cm.report.timings.items())
                    + (" (cache hit)" if cm.report.cache_hit else "")),
        ("roofs", f"FMA {prof.peaks.fma(prof.threads):.1f} GFLOP/s, memory "
                  f"{prof.peaks.bandwidth(prof.threads):.1f} GB/s ({prof.peaks.cpu})"
                  if prof.peaks is not None else "not measured (GPU target)"),
        ("made by", (f"minicc {__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
                    f" in {time.perf_counter() - t0:.1f} s"))])
    body = (f"<h2>Summary</h2>{summary}<h2>Kernels, slowest first</h2>{_profile_table(prof)}"
            f"<h2>Roofline</h2>{_roofline_svg(prof) if prof.peaks else ''}"
            f"<h2>Fused graph</h2>{_graph_html(graph_dot(model, 'fused', options, **fields))}")
    p = Path(out)
    p.write_text(_page(f"minicc report: {Path(str(model)).name}", body))
    return p

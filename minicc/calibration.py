"""Calibration: activation ranges for INT8 quantization, from running the float model.

Each observed tensor keeps its min, max and a histogram of |x| (2048 bins over [0, R], re-binned
when a batch exceeds R), so memory stays bounded whatever the number of batches. Calibrators turn
that into a range [lo, hi]:

    minmax       the observed min and max
    percentile   |x| clipped at the given percentile of the histogram (default 99.99)
    entropy      the threshold whose 8-bit quantized histogram is closest to the observed one in
                 KL divergence (NVIDIA's method, GTC 2017 S7310), every bin from the number of
                 quantized levels up to 2048 tried; exact zeros are left out of the histogram
                 (a zero point represents them exactly at any threshold)

Calibration data: a .npy file (one input), a .npz (inputs by name), a folder of either, a list
of feed dicts, or `random:N` (N random batches, for smoke tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from minicc.errors import MiniccError

METHODS = ("minmax", "entropy", "percentile")
BINS = 2048


@dataclass
class Observer:
    """Running statistics of one tensor."""

    lo: float = np.inf
    hi: float = -np.inf
    hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    edge: float = 0.0                 # the histogram covers |x| in [0, edge]
    count: int = 0

    def update(self, a: np.ndarray) -> None:
        a = np.asarray(a, np.float32).ravel()
        if a.size == 0:
            return
        if not np.all(np.isfinite(a)):
            raise MiniccError("calibration: the float model produced NaN or infinity on the "
                              "calibration data")
        self.lo, self.hi = min(self.lo, float(a.min())), max(self.hi, float(a.max()))
        mag = np.abs(a)
        top = float(mag.max())
        mag = mag[mag > 0]      # exact zeros (ReLU outputs, padding) quantize without error at
        #                         any threshold; in the histogram they would only drag the KL
        #                         search toward small thresholds
        if top > self.edge:
            self._rebin(top if self.edge == 0 else max(top, 2 * self.edge))
        h, _ = np.histogram(mag, bins=BINS, range=(0.0, self.edge or 1.0))
        self.hist += h
        self.count += a.size

    def _rebin(self, edge: float) -> None:
        """Widen the range to `edge`, moving each old bin's count to the bin of its center."""
        if self.edge > 0 and self.hist.any():
            centers = (np.arange(BINS) + 0.5) * (self.edge / BINS)
            idx = np.minimum((centers / edge * BINS).astype(np.int64), BINS - 1)
            new = np.zeros(BINS, np.int64)
            np.add.at(new, idx, self.hist)
            self.hist = new
        self.edge = edge


def _threshold_percentile(o: Observer, pct: float) -> float:
    cdf = np.cumsum(o.hist) / max(1, o.hist.sum())
    i = int(np.searchsorted(cdf, pct / 100.0))
    return (min(i, BINS - 1) + 1) * o.edge / BINS


def _threshold_entropy(o: Observer, levels: int) -> float:
    """The |x| threshold minimizing KL(P || Q), P the histogram clipped at the threshold (the
    tail folded into its last bin), Q that clipped histogram quantized to `levels` bins and
    spread back over P's non-empty bins."""
    hist = o.hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return o.edge
    best, best_i = np.inf, BINS
    csum = np.cumsum(hist)
    for i in range(levels, BINS + 1):
        p = hist[:i].copy()
        p[-1] += total - csum[i - 1]                  # outliers go to the last bin
        nz = p > 0
        # merge hist[:i] into `levels` groups, each spread evenly over its non-empty bins
        groups = np.minimum((np.arange(i) * levels) // i, levels - 1)
        sums = np.bincount(groups, weights=hist[:i], minlength=levels)
        counts = np.bincount(groups, weights=(hist[:i] > 0), minlength=levels)
        q = np.where(hist[:i] > 0, sums[groups] / np.maximum(counts[groups], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        pn, qn = p / ps, q / qs
        ok = nz & (qn > 0)
        kl = float(np.sum(pn[ok] * np.log(pn[ok] / qn[ok]))) + (
            np.inf if np.any(nz & (qn == 0)) else 0.0)
        if kl < best:
            best, best_i = kl, i
    return best_i * o.edge / BINS


def tensor_range(o: Observer, method: str, percentile: float = 99.99) -> tuple[float, float]:
    """[lo, hi] for `o` by the calibrator `method` (always containing 0)."""
    if o.count == 0:
        raise MiniccError("calibration: a tensor was never observed (empty calibration set?)")
    lo, hi = min(o.lo, 0.0), max(o.hi, 0.0)
    if method == "minmax":
        return lo, hi
    if method == "percentile":
        t = _threshold_percentile(o, percentile)
    elif method == "entropy":
        t = _threshold_entropy(o, 256 if o.lo >= 0 else 128)
    else:
        raise MiniccError(f"unknown calibration method '{method}' (methods: "
                          f"{', '.join(METHODS)})")
    return max(lo, -t), min(hi, t)


@dataclass(frozen=True)
class QParams:
    """u8 storage: x = (q - zero_point) * scale. Symmetric ranges use zero point 128 (an s8
    value shifted into u8, which is what vpdpbusd's unsigned operand wants)."""

    scale: float
    zero_point: int

    @staticmethod
    def of(lo: float, hi: float, symmetric: bool) -> "QParams":
        if symmetric:
            m = max(abs(lo), abs(hi))
            return QParams(m / 127.0 if m > 0 else 1.0, 128)
        s = (hi - lo) / 255.0
        if s <= 0:
            return QParams(1.0, 0)
        return QParams(s, int(np.clip(round(-lo / s), 0, 255)))


# ---- calibration data ------------------------------------------------------------------------

def _from_file(p: Path, names: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    if p.suffix == ".npz":
        with np.load(p) as z:
            missing = [n for n in names if n not in z.files]
            if missing:
                raise MiniccError(f"calibration file {p}: no array for input(s) "
                                  f"{', '.join(missing)} (it holds {', '.join(z.files)})")
            yield {n: z[n] for n in names}
    elif p.suffix == ".npy":
        if len(names) != 1:
            raise MiniccError(f"calibration file {p}: a .npy holds one array but the model has "
                              f"{len(names)} inputs ({', '.join(names)}); use .npz")
        yield {names[0]: np.load(p)}
    else:
        raise MiniccError(f"calibration data {p}: expected .npy, .npz or a folder of them")


def calibration_batches(data: Any, signature: Sequence[tuple[str, Any]], seed: int = 0
                        ) -> list[dict[str, np.ndarray]]:
    """The calibration feeds `data` names (see the module docstring), checked against the
    model's inputs `signature` [(name, TensorType)]: dtype and shape must match."""
    names = [n for n, _ in signature]
    feeds: list[dict[str, np.ndarray]]
    if isinstance(data, str) and data.startswith("random:"):
        from minicc.profile import random_feeds

        try:
            n = int(data.split(":", 1)[1])
        except ValueError:
            raise MiniccError(f"calibration data '{data}': random:N needs a count") from None
        sig = [(name, t.dtype.value, tuple(t.shape)) for name, t in signature]
        if any(not isinstance(d, int) for _, _, sh in sig for d in sh):
            raise MiniccError("calibration data random:N needs static input shapes "
                              "(--input-shape)")
        feeds = [random_feeds(sig, seed + i) for i in range(n)]
    elif isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in (".npy", ".npz"))
            feeds = [fd for f in files for fd in _from_file(f, names)]
        elif p.exists():
            feeds = list(_from_file(p, names))
        else:
            raise MiniccError(f"calibration data {p}: no such file or folder")
    elif isinstance(data, Mapping):
        feeds = [dict(data)]
    else:
        feeds = [dict(d) for d in data]
    if not feeds:
        raise MiniccError(f"calibration data {data!r}: empty (no batches)")
    for k, fd in enumerate(feeds):
        for name, t in signature:
            if name not in fd:
                raise MiniccError(f"calibration batch {k}: no input '{name}'")
            a = np.asarray(fd[name])
            if a.dtype != t.dtype.np:
                raise MiniccError(f"calibration batch {k}: input '{name}' is {a.dtype}, the "
                                  f"model wants {t.dtype.value}")
            want = tuple(t.shape)
            if len(a.shape) != len(want) or any(isinstance(d, int) and d != s
                                                for d, s in zip(want, a.shape)):
                raise MiniccError(f"calibration batch {k}: input '{name}' has shape "
                                  f"{list(a.shape)}, the model wants {list(want)}")
    return feeds


def observe(run: Any, feeds: Iterable[Mapping[str, np.ndarray]], names: Sequence[str],
            progress: bool = True) -> dict[str, Observer]:
    """Run `run(feed) -> {name: array}` over the feeds, observing the outputs `names`."""
    obs = {n: Observer() for n in names}
    feeds = list(feeds)
    it: Iterable[Any] = feeds
    if progress:
        try:
            from tqdm import tqdm

            it = tqdm(feeds, desc="calibrating", unit="batch", leave=False)
        except ImportError:
            pass
    for fd in it:
        out = run(fd)
        for n in names:
            obs[n].update(out[n])
    return obs

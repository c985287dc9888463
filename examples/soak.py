"""Soak and serving throughput on light_squeezenet: RSS over 10,000 runs of one compiled model,
then runs/s with 1 thread, 2 threads on one model (each call takes its own arena from the pool)
and 2 threads on two models.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python examples/soak.py
"""
import os, time, threading, numpy as np, onnx, minicc
from minicc.demo import light_model_path
from minicc.bench import randomize_constants
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
m = randomize_constants(onnx.load(light_model_path("squeezenet")))
cm = minicc.compile(m, threads=1, cache=False)
x = {"data_0": np.random.default_rng(0).standard_normal((1,3,224,224)).astype(np.float32)}
ref = cm.run(x)["softmaxout_1"]
for _ in range(100): cm.run(x)
marks = {}
t0 = time.perf_counter()
for i in range(1, 10001):
    y = cm.run(x)["softmaxout_1"]
    if i in (1, 1000, 5000, 10000):
        marks[i] = rss(); assert np.array_equal(y, ref)
print("soak squeezenet 10000 runs: RSS MiB at runs 1/1000/5000/10000:", {k: round(v, 1) for k, v in marks.items()}, "%.1f s" % (time.perf_counter()-t0))
# concurrency: 2 threads on one model (serialized) vs 2 models (own arenas)
def thr(models, n=200):
    def w(c):
        for _ in range(n): c.run(x)
    ts = [threading.Thread(target=w, args=(c,)) for c in models]
    t = time.perf_counter()
    for th in ts: th.start()
    for th in ts: th.join()
    return len(models) * n / (time.perf_counter() - t)
cm2 = minicc.compile(m, threads=1, cache=False)
one = thr([cm]); same = thr([cm, cm]); two = thr([cm, cm2])
print("throughput runs/s: 1 thread %.1f, 2 threads one model %.1f, 2 threads two models (own arenas) %.1f" % (one, same, two))

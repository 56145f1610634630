"""numpy.random.choice(n, size, p=p) on the ML-1M item distribution (count^0.75): the way the
Python peers draw popularity negatives. Prints draws per second for comparison with
`cargo bench -p recall-sampling --bench draws` run in the same session.

Usage: python3 numpy_peer.py [path/to/ml-1m/interactions.parquet]
"""
import sys
import time

import numpy as np

if len(sys.argv) > 1:
    import pyarrow.parquet as pq
    ids = pq.read_table(sys.argv[1], columns=["movie_id"]).column(0).to_numpy()
    counts = np.sort(np.unique(ids, return_counts=True)[1])[::-1].astype(np.float64)
else:
    counts = np.array([30000 // r + 1 for r in range(1, 3707)], dtype=np.float64)
p = counts ** 0.75
p /= p.sum()
rng = np.random.default_rng(1)
n = 1_000_000
best = float("inf")
for _ in range(10):
    t = time.perf_counter()
    np.random.choice(len(p), size=n, p=p)
    best = min(best, time.perf_counter() - t)
legacy = n / best
best = float("inf")
for _ in range(10):
    t = time.perf_counter()
    rng.choice(len(p), size=n, p=p)
    best = min(best, time.perf_counter() - t)
print(f"numpy {np.__version__} on {len(p)} items: np.random.choice {legacy / 1e6:.1f} M draws/s, "
      f"Generator.choice {n / best / 1e6:.1f} M draws/s (best of 10 x 10^6)")

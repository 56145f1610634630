#!/usr/bin/env python3
"""A fresh-items quota, offline: each test user's list of K = 50 is the model's top K - q over
the whole catalogue, then the q best cold items (by the same vectors) not already in it. Over
two seeds' runs of a `*-cold-start.toml` pipeline, HitRate@50 on cold-item targets and on warm
ones, pooled per user over the seeds, against random with the same quota (exact: a random
main part, then q random cold items), paired bootstrap over users. Needs pyarrow and numpy.

    python3 scripts/analysis/fresh_quota.py RUN_SEED42 RUN_SEED43 dssm-cold 5,10,20

MEASUREMENTS.md, "Whether MovieLens rewards new films" (issue 34).
"""
import pathlib
import sys
from math import comb

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from evaluated_run import K, EvaluatedRun, bootstrap, random_hit  # noqa: E402


def random_cold_hit(n, cold, targets, main, quota):
    """A random main part of `main` of `n` items (`cold` of them cold), then `quota` random cold
    items not in it: the listed cold items are a uniform subset of size min(cold, x + quota)
    given x cold in the main part, so a miss is a hypergeometric mixture."""
    miss = 0.0
    for x in range(min(main, cold) + 1):
        px = comb(cold, x) * comb(n - cold, main - x) / comb(n, main)
        listed = min(cold, x + quota)
        miss += px * comb(cold - targets, listed) / comb(cold, listed)
    return 1 - miss


def per_user(run, model, quota):
    data = EvaluatedRun(run, model)
    items, first_cold = data.items, data.first_cold
    n, cold = len(items), len(items) - (first_cold - items[0])
    out = {}
    for u, truth, position in data.rows("test"):
        order = [items[j] for j in np.argsort(-(data.matrix @ data.query_vector(u, position)), kind="stable")]
        main = order[: K - quota]
        fresh = [i for i in order if i >= first_cold and i not in set(main)][:quota]
        listed, plain = set(main) | set(fresh), set(order[:K])
        cold_targets = {i for i in truth if i >= first_cold}
        warm_targets = truth - cold_targets
        if cold_targets:
            c = len(cold_targets)
            out[(u, "cold")] = (bool(cold_targets & listed), bool(cold_targets & plain),
                                random_cold_hit(n, cold, c, K - quota, quota), random_cold_hit(n, cold, c, K, 0))
        if warm_targets:
            w = len(warm_targets)
            out[(u, "warm")] = (bool(warm_targets & listed), bool(warm_targets & plain),
                                random_hit(n, w, K - quota), random_hit(n, w, K))
    return out


def main():
    runs, model, quotas = sys.argv[1:3], sys.argv[3], [int(q) for q in sys.argv[4].split(",")]
    for quota in quotas:
        seeds = [per_user(run, model, quota) for run in runs]
        for group in ("cold", "warm"):
            keys = sorted(k for k in seeds[0] if k[1] == group and k in seeds[1])
            column = lambda j: [(float(seeds[0][k][j]) + float(seeds[1][k][j])) / 2 for k in keys]
            with_quota, plain, random_quota, random_plain = (column(j) for j in range(4))
            mean = lambda v: sum(v) / len(v)
            diff = [a - b for a, b in zip(with_quota, random_quota)]
            lo, hi = bootstrap(diff)
            print(f"q={quota} {group} targets, {len(keys)} users: with the quota {mean(with_quota):.4f}, random with it "
                  f"{mean(random_quota):.4f}, difference {mean(diff):+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}), "
                  f"{mean(with_quota) / mean(random_quota):.2f}x; without a quota {mean(plain):.4f}, random {mean(random_plain):.4f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An item-age prior on a trained model's scores, offline: score = u.v / temperature
+ beta * log lift(age bucket of the item at the query's time), the lift per bucket measured on
the training ratings (the share of ratings on films of that age over their share of the films
released by then, as scripts/analysis/freshness.py measures it). Beta is chosen on the
validation split (HitRate@50 over all targets, unfiltered, mean of the two seeds' runs); the
test split is then read for the chosen beta against beta = 0, over all targets, cold-item
targets and warm ones, pooled per user over the seeds, paired bootstrap over users, and the
cold targets against random's exact expectation. Query vectors come from the Python reference
at the history before each row's target, as the evaluate stage ranks. Needs pyarrow, numpy.

    RECALL_DATA_DIR=../shared/data python3 scripts/analysis/freshness_prior.py \\
        RUN_SEED42 RUN_SEED43 dssm-cold ml-latest-small

MEASUREMENTS.md, "Whether MovieLens rewards new films" (issue 34).
"""
import math
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from evaluated_run import FIRST_ITEM, K, EvaluatedRun, bootstrap, random_hit  # noqa: E402
from freshness import DAY, YEAR, ml_100k, ml_latest_small  # noqa: E402

BETAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# Age bucket edges: days where release dates are to the day, years where only the year is known.
EDGES = {"ml-100k": ([0, 30, 90, 180, 365, 730, 1825, 3650], DAY), "ml-latest-small": ([0, 1, 2, 3, 5, 10, 20], YEAR)}
UNRELEASED, UNKNOWN = -1, -2


def buckets_at(t, released, edges, unit):
    """Every item's age bucket at time `t` (`released` seconds per item, NaN unknown)."""
    age = (t - released) / unit
    out = np.full(len(released), UNKNOWN)
    known = ~np.isnan(age)
    out[known & (age < 0)] = UNRELEASED
    for j, edge in enumerate(edges):
        out[known & (age >= edge)] = j
    return out


def run_scores(run, model, data):
    """Per split and user: (score vector without the prior, log-lift vector at the query time,
    truth set); the run; the lift per bucket."""
    r = EvaluatedRun(run, model)
    released_of = {"ml-100k": ml_100k, "ml-latest-small": ml_latest_small}[data]()[1]
    edges, unit = EDGES[data]
    released = np.array([released_of.get(int(r.raw_item[i]), np.nan) for i in r.items])
    # The lift per bucket on the training ratings; the catalogue side at every 7th of their times.
    counts, catalogue, total, sampled = {}, {}, 0, 0
    for u, seq in r.items_of.items():
        for p in range(r.train_len[u]):
            t = r.times_of[u][p]
            if seq[p] < FIRST_ITEM or t is None:
                continue
            when = released_of.get(int(r.raw_item[seq[p]]))
            b = UNKNOWN if when is None else buckets_at(t, np.array([when]), edges, unit)[0]
            counts[b] = counts.get(b, 0) + 1
            total += 1
            if p % 7 == 0:
                values, n = np.unique(buckets_at(t, released, edges, unit), return_counts=True)
                for b2, c in zip(values, n):
                    catalogue[b2] = catalogue.get(b2, 0) + c / len(r.items)
                sampled += 1
    log_lift = {b: math.log(max((counts.get(b, 0) / total) / (share / sampled), 1e-3)) for b, share in catalogue.items()}
    out = {}
    for split in ("valid", "test"):
        for u, truth, p in r.rows(split):
            scores = (r.matrix @ r.query_vector(u, p)) / r.temperature
            lift = np.array([log_lift.get(b, 0.0) for b in buckets_at(r.times_of[u][p], released, edges, unit)])
            out[(split, u)] = (scores, lift, truth)
    return out, r, {int(b): round(math.exp(v), 2) for b, v in sorted(log_lift.items())}


def hits(scores, lift, truth, beta, items, first_cold):
    top = {items[j] for j in np.argsort(-(scores + beta * lift), kind="stable")[:K]}
    cold = {i for i in truth if i >= first_cold}
    return {"all": truth, "cold": cold, "warm": truth - cold}, top


def main():
    runs, model, data = sys.argv[1:3], sys.argv[3], sys.argv[4]
    per_run = [run_scores(run, model, data) for run in runs]
    print(f"lift per age bucket (-1 not yet released, -2 no date), {runs[0]}: {per_run[0][2]}")
    table = {}
    for out, r, _ in per_run:
        for (split, u), (scores, lift, truth) in out.items():
            for beta in BETAS:
                groups, top = hits(scores, lift, truth, beta, r.items, r.first_cold)
                for group, targets in groups.items():
                    if targets:
                        table.setdefault((split, beta, group, u), []).append(float(bool(targets & top)))
    pooled = lambda split, beta, group: {k[3]: sum(v) / len(v) for k, v in table.items()
                                          if k[:3] == (split, beta, group) and len(v) == len(runs)}
    mean = lambda d: sum(d.values()) / len(d)
    for beta in BETAS:
        print(f"valid, beta {beta}: HitRate@50 {mean(pooled('valid', beta, 'all')):.4f} over {len(pooled('valid', beta, 'all'))} users")
    chosen = max(BETAS, key=lambda b: mean(pooled("valid", b, "all")))
    with_prior, without = pooled("valid", chosen, "all"), pooled("valid", 0.0, "all")
    lo, hi = bootstrap([with_prior[u] - without[u] for u in sorted(with_prior)])
    print(f"chosen on validation: beta {chosen}, {mean(with_prior) - mean(without):+.4f} over beta 0 (95 % CI {lo:+.4f} to {hi:+.4f})")
    for group in ("all", "cold", "warm"):
        with_prior, without = pooled("test", chosen, group), pooled("test", 0.0, group)
        users = sorted(with_prior)
        lo, hi = bootstrap([with_prior[u] - without[u] for u in users])
        print(f"test, {group} targets ({len(users)} users): {mean(with_prior):.4f} against {mean(without):.4f} without the prior, "
              f"{mean(with_prior) - mean(without):+.4f} (95 % CI {lo:+.4f} to {hi:+.4f})")
    # Cold targets against random's exact expectation over the rankable items.
    out, r, _ = per_run[0]
    n, cold_count = len(r.items), r.items[-1] + 1 - r.first_cold
    expect = {}
    for (split, u), (_, _, truth) in out.items():
        c = sum(1 for i in truth if i >= r.first_cold)
        if split == "test" and c:
            expect[u] = random_hit(n, c, K)
    cold = pooled("test", chosen, "cold")
    users = sorted(cold)
    lo, hi = bootstrap([cold[u] - expect[u] for u in users])
    print(f"test, cold targets with the prior {mean(cold):.4f} against random's {sum(expect[u] for u in users) / len(users):.4f}: "
          f"{mean(cold) - sum(expect[u] for u in users) / len(users):+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}); {cold_count} cold items")


if __name__ == "__main__":
    main()

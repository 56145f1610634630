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
import json
import math
import pathlib
import random
import sys

import numpy as np
import pyarrow.parquet as pq

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python"))
sys.path.insert(0, str(HERE))
from freshness import DAY, YEAR, ml_100k, ml_latest_small  # noqa: E402
from recall_outputs.reference import ExportedModel  # noqa: E402

K = 50
FIRST_ITEM = 2
BETAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# Age bucket edges: days where release dates are to the day, years where only the year is known.
EDGES = {"ml-100k": ([0, 30, 90, 180, 365, 730, 1825, 3650], DAY), "ml-latest-small": ([0, 1, 2, 3, 5, 10, 20], YEAR)}
UNRELEASED, UNKNOWN = -1, -2


def bootstrap(values, n=2000, seed=7):
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(len(values))] for _ in values) / len(values) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


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
    truth set), and the first cold row."""
    enc = f"{run}/encode"
    features = json.load(open(f"{enc}/features.json"))
    n_items = features["item_table_size"]
    first_cold = n_items - features["stats"]["cold_items"]
    vocab = lambda name: dict(zip(*(pq.read_table(f"{enc}/vocab_{name}.parquet").column(c).to_pylist() for c in ("index", "raw"))))
    raw_item, raw_user = vocab("item_id"), vocab("user_id")
    loader = {"ml-100k": ml_100k, "ml-latest-small": ml_latest_small}[data]
    released_of = loader()[1]
    edges, unit = EDGES[data]
    items = list(range(FIRST_ITEM, n_items))
    released = np.array([released_of.get(int(raw_item[i]), np.nan) for i in items])
    seqs = pq.read_table(f"{enc}/sequences.parquet").to_pydict()
    items_of = dict(zip(seqs["user_idx"], seqs["items"]))
    times_of = dict(zip(seqs["user_idx"], seqs["timestamps"]))
    train_len = dict(zip(seqs["user_idx"], seqs["train_len"]))
    # The lift per bucket on the training ratings; the catalogue side at every 7th of their times.
    counts, catalogue, total, sampled = {}, {}, 0, 0
    for u, seq in items_of.items():
        for p in range(train_len[u]):
            t = times_of[u][p]
            if seq[p] < FIRST_ITEM or t is None:
                continue
            r = released_of.get(int(raw_item[seq[p]]))
            b = UNKNOWN if r is None else buckets_at(t, np.array([r]), edges, unit)[0]
            counts[b] = counts.get(b, 0) + 1
            total += 1
            if p % 7 == 0:
                values, n = np.unique(buckets_at(t, released, edges, unit), return_counts=True)
                for b2, c in zip(values, n):
                    catalogue[b2] = catalogue.get(b2, 0) + c / len(items)
                sampled += 1
    log_lift = {b: math.log(max((counts.get(b, 0) / total) / (share / sampled), 1e-3)) for b, share in catalogue.items()}
    temperature = json.load(open(f"{run}/train/{model}/config.json"))["temperature"]
    item_vec = {r: np.array(e, dtype=np.float32) for r, e in zip(*(
        pq.read_table(f"{run}/export/{model}/item_embeddings.parquet").column(c).to_pylist() for c in ("item_id", "embedding")))}
    matrix = np.stack([item_vec[raw_item[i]] for i in items])
    reference = ExportedModel(f"{run}/export/{model}")

    def side(entity):
        path = pathlib.Path(f"{run}/ingest/{entity}s.parquet")
        return {r[f"{entity}_id"]: r for r in pq.read_table(path).to_pylist()} if path.exists() else {}

    reference.set_items(side("item").values())
    user_rows = side("user")
    later = pq.read_table(f"{enc}/later_targets.parquet").to_pydict()
    out = {}
    for split in ("valid", "test"):
        rows = pq.read_table(f"{enc}/{split}.parquet").to_pydict()
        for u, p in zip(rows["user_idx"], rows["position"]):
            truth = {items_of[u][p]}
            if split == "test":
                truth |= {i for lu, i in zip(later["user_idx"], later["item_idx"]) if lu == u}
            query = reference.user_vector([raw_item.get(i) for i in items_of[u][:p]], user_id=raw_user[u],
                                          user=user_rows.get(raw_user[u])).astype(np.float32)
            lift = np.array([log_lift.get(b, 0.0) for b in buckets_at(times_of[u][p], released, edges, unit)])
            out[(split, u)] = ((matrix @ query) / temperature, lift, truth)
    return out, first_cold, items, {int(b): round(math.exp(v), 2) for b, v in sorted(log_lift.items())}


def hits(scores, lift, truth, beta, items, first_cold):
    top = {items[j] for j in np.argsort(-(scores + beta * lift), kind="stable")[:K]}
    cold = {i for i in truth if i >= first_cold}
    return {"all": truth, "cold": cold, "warm": truth - cold}, top


def main():
    runs, model, data = sys.argv[1:3], sys.argv[3], sys.argv[4]
    per_run = [run_scores(run, model, data) for run in runs]
    print(f"lift per age bucket (-1 not yet released, -2 no date), {runs[0]}: {per_run[0][3]}")
    table = {}
    for out, first_cold, items, _ in per_run:
        for (split, u), (scores, lift, truth) in out.items():
            for beta in BETAS:
                groups, top = hits(scores, lift, truth, beta, items, first_cold)
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
    out, first_cold, items, _ = per_run[0]
    n, cold_count = len(items), items[-1] + 1 - first_cold
    expect = {}
    for (split, u), (_, _, truth) in out.items():
        c = sum(1 for i in truth if i >= first_cold)
        if split == "test" and c:
            miss = 1.0
            for j in range(K):
                miss *= (n - c - j) / (n - j)
            expect[u] = 1 - miss
    cold = pooled("test", chosen, "cold")
    users = sorted(cold)
    lo, hi = bootstrap([cold[u] - expect[u] for u in users])
    print(f"test, cold targets with the prior {mean(cold):.4f} against random's {sum(expect[u] for u in users) / len(users):.4f}: "
          f"{mean(cold) - sum(expect[u] for u in users) / len(users):+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}); {cold_count} cold items")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A fresh-items quota, offline: each test user's list of K = 50 is the model's top K - q over
the whole catalogue, then the q best cold items (by the same vectors) not already in it. Over
two seeds' runs of a `*-cold-start.toml` pipeline, HitRate@50 on cold-item targets and on warm
ones, pooled per user over the seeds, against random with the same quota (exact: a random
main part, then q random cold items), paired bootstrap over users. Needs pyarrow and numpy.

    python3 scripts/analysis/fresh_quota.py RUN_SEED42 RUN_SEED43 dssm-cold 5,10,20

MEASUREMENTS.md, "Whether MovieLens rewards new films" (issue 34).
"""
import json
import pathlib
import random
import sys
from math import comb

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "python"))
from recall_outputs.reference import ExportedModel  # noqa: E402

K = 50
FIRST_ITEM = 2  # rows 0 and 1: padding and the unknown id


def bootstrap(values, n=2000, seed=7):
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(len(values))] for _ in values) / len(values) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


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


def random_warm_hit(n, targets, main):
    return 1 - comb(n - targets, main) / comb(n, main)


def per_user(run, model, quota):
    enc = f"{run}/encode"
    features = json.load(open(f"{enc}/features.json"))
    n_items = features["item_table_size"]
    first_cold = n_items - features["stats"]["cold_items"]
    vocab = lambda name: dict(zip(*(pq.read_table(f"{enc}/vocab_{name}.parquet").column(c).to_pylist() for c in ("index", "raw"))))
    raw_item, raw_user = vocab("item_id"), vocab("user_id")
    seqs = pq.read_table(f"{enc}/sequences.parquet")
    items_of = dict(zip(seqs.column("user_idx").to_pylist(), seqs.column("items").to_pylist()))
    test = pq.read_table(f"{enc}/test.parquet")
    users = test.column("user_idx").to_pylist()
    truth = {u: {items_of[u][p]} for u, p in zip(users, test.column("position").to_pylist())}
    later = pq.read_table(f"{enc}/later_targets.parquet")
    for u, i in zip(later.column("user_idx").to_pylist(), later.column("item_idx").to_pylist()):
        truth[u].add(i)
    table = lambda entity, key: {
        r: np.array(e, dtype=np.float32)
        for r, e in zip(*(pq.read_table(f"{run}/export/{model}/{entity}_embeddings.parquet").column(c).to_pylist() for c in (key, "embedding")))
    }
    item_vec = table("item", "item_id")
    # Each test row's query vector, as the evaluate stage ranks with: the user tower at the
    # history before the row's target, through the Python reference (the exported
    # `user_embeddings.parquet` is the serving vector, the test items included).
    reference = ExportedModel(f"{run}/export/{model}")
    def side(entity):  # the ingested side table, if the dataset has one
        path = pathlib.Path(f"{run}/ingest/{entity}s.parquet")
        return {r[f"{entity}_id"]: r for r in pq.read_table(path).to_pylist()} if path.exists() else {}

    reference.set_items(side("item").values())
    user_rows = side("user")
    positions = dict(zip(users, test.column("position").to_pylist()))
    user_vec = {
        u: reference.user_vector([raw_item.get(i) for i in items_of[u][: positions[u]]],
                                 user_id=raw_user[u], user=user_rows.get(raw_user[u])).astype(np.float32)
        for u in users
    }
    items = list(range(FIRST_ITEM, n_items))
    matrix = np.stack([item_vec[raw_item[i]] for i in items])
    n, cold = len(items), n_items - first_cold
    out = {}
    for u in users:
        order = [items[j] for j in np.argsort(-(matrix @ user_vec[u]), kind="stable")]
        main = order[: K - quota]
        fresh = [i for i in order if i >= first_cold and i not in set(main)][:quota]
        listed, plain = set(main) | set(fresh), set(order[:K])
        cold_targets = {i for i in truth[u] if i >= first_cold}
        warm_targets = truth[u] - cold_targets
        if cold_targets:
            c = len(cold_targets)
            out[(u, "cold")] = (bool(cold_targets & listed), bool(cold_targets & plain),
                                random_cold_hit(n, cold, c, K - quota, quota), random_cold_hit(n, cold, c, K, 0))
        if warm_targets:
            w = len(warm_targets)
            out[(u, "warm")] = (bool(warm_targets & listed), bool(warm_targets & plain),
                                random_warm_hit(n, w, K - quota), random_warm_hit(n, w, K))
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

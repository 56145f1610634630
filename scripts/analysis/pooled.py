#!/usr/bin/env python3
"""Two models of the same pipeline, pooled over its runs (seeds): each test user's value
averaged over the runs, from the evaluate stage's per-user files, the paired difference with a
bootstrap interval over users, and (unfiltered view) random's exact expectation beside them.
Needs pyarrow.

    python3 scripts/analysis/pooled.py --group cold dssm-cold dssm-cold+age-prior RUN42 RUN43

`--group` is `all` (every target), `cold` or `warm` (a time split with cold items: the users
with such a target, counting those targets alone); `--view` none, all or recent; `--metric`
a per-user column (default hit_rate@50). MEASUREMENTS.md, "An item-age prior in the evaluate
stage" (issue 34).
"""
import argparse
import json

import pyarrow.parquet as pq

from evaluated_run import FIRST_ITEM, bootstrap, random_hit


def per_user(run, model, group, view, metric):
    split = "test" if group == "all" else f"test_{group}"
    t = pq.read_table(f"{run}/evaluate/{model}/per_user_{split}_{view}.parquet").to_pydict()
    return dict(zip(t["user_row"], t[metric]))


def random_expectation(run, group, k):
    """Each test row's chance of a hit in `k` random items of the whole catalogue."""
    enc = f"{run}/encode"
    features = json.load(open(f"{enc}/features.json"))
    n_items = features["item_table_size"]
    first_cold = n_items - features["stats"]["cold_items"]
    seqs = pq.read_table(f"{enc}/sequences.parquet", columns=["user_idx", "items"]).to_pydict()
    items_of = dict(zip(seqs["user_idx"], seqs["items"]))
    rows = pq.read_table(f"{enc}/test.parquet").to_pydict()
    truth = [{items_of[u][p]} for u, p in zip(rows["user_idx"], rows["position"])]
    row_of = {u: r for r, u in enumerate(rows["user_idx"])}
    try:
        later = pq.read_table(f"{enc}/later_targets.parquet").to_pydict()
        for u, i in zip(later["user_idx"], later["item_idx"]):
            truth[row_of[u]].add(i)
    except FileNotFoundError:
        pass
    keep = {"all": lambda i: True, "cold": lambda i: i >= first_cold, "warm": lambda i: i < first_cold}[group]
    out = {}
    for r, targets in enumerate(truth):
        c = sum(1 for i in targets if keep(i))
        if c:
            out[r] = random_hit(n_items - FIRST_ITEM, c, k)
    return out


def pooled(values):
    users = set.intersection(*(set(v) for v in values))
    return {u: sum(v[u] for v in values) / len(values) for u in sorted(users)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--group", default="all", choices=["all", "cold", "warm"])
    p.add_argument("--view", default="none", choices=["none", "all", "recent"])
    p.add_argument("--metric", default="hit_rate@50")
    p.add_argument("model_a")
    p.add_argument("model_b")
    p.add_argument("runs", nargs="+")
    a = p.parse_args()
    values = {m: pooled([per_user(run, m, a.group, a.view, a.metric) for run in a.runs]) for m in (a.model_a, a.model_b)}
    users = sorted(set(values[a.model_a]) & set(values[a.model_b]))
    mean = lambda d: sum(d[u] for u in users) / len(users)
    lo, hi = bootstrap([values[a.model_b][u] - values[a.model_a][u] for u in users])
    print(f"{a.group} targets, {a.view} view, {a.metric}, {len(users)} users, {len(a.runs)} runs: "
          f"{a.model_a} {mean(values[a.model_a]):.4f}, {a.model_b} {mean(values[a.model_b]):.4f}, "
          f"difference {mean(values[a.model_b]) - mean(values[a.model_a]):+.4f} (95 % CI {lo:+.4f} to {hi:+.4f})")
    if a.view == "none" and a.metric.startswith("hit_rate@"):
        k = int(a.metric.split("@")[1])
        expect = random_expectation(a.runs[0], a.group, k)
        for m in (a.model_a, a.model_b):
            lo, hi = bootstrap([values[m][u] - expect[u] for u in users])
            e = sum(expect[u] for u in users) / len(users)
            print(f"  {m} against random's expectation {e:.4f}: {mean(values[m]) - e:+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}), "
                  f"{mean(values[m]) / e:.2f}x")


if __name__ == "__main__":
    main()

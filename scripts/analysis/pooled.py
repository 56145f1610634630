#!/usr/bin/env python3
"""Two models of the same pipeline, pooled over its runs (seeds): each user's value
averaged over the runs, from the evaluate stage's per-user files (test, or with `--split valid`
the validation split: what choices are made on), the paired difference with a
bootstrap interval over users, and (unfiltered view) random's exact expectation beside them.
Needs pyarrow.

    python3 scripts/analysis/pooled.py --group cold dssm-cold dssm-cold+age-prior RUN42 RUN43

Runs of different encodings (time cuts) are given as groups, each a comma-separated list of
the runs (seeds) of one encoding: every group's users count as users of their own, so the
queries of several cuts pool into one interval (`... RUN42_2016,RUN43_2016 RUN42_2017,RUN43_2017`).

`--against RUN42,RUN43` reads `model_b` from other runs of the same users (a refit, another
encoding of the same split): users are paired by raw id, one encoding only.

`--group` is `all` (every target), `cold` or `warm` (a time split with cold items: the users
with such a target, counting those targets alone); `--view` none, all or recent; `--metric`
a per-user column (default hit_rate@50). MEASUREMENTS.md, "An item-age prior in the evaluate
stage" (issue 34).
"""
import argparse
import json
import random

import pyarrow.parquet as pq

from evaluated_run import FIRST_ITEM, bootstrap, random_hit


def per_user(run, model, split, group, view, metric):
    name = split if group == "all" else f"{split}_{group}"
    t = pq.read_table(f"{run}/evaluate/{model}/per_user_{name}_{view}.parquet").to_pydict()
    return dict(zip(t["user_row"], t[metric]))


def random_expectation(run, split, group, k):
    """Each row's chance of a hit in `k` random items of the whole catalogue."""
    enc = f"{run}/encode"
    features = json.load(open(f"{enc}/features.json"))
    n_items = features["item_table_size"]
    first_cold = n_items - features["stats"]["cold_items"]
    seqs = pq.read_table(f"{enc}/sequences.parquet", columns=["user_idx", "items"]).to_pydict()
    items_of = dict(zip(seqs["user_idx"], seqs["items"]))
    rows = pq.read_table(f"{enc}/{split}.parquet").to_pydict()
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


def raw_users(run, split):
    """Each row's raw user id."""
    enc = f"{run}/encode"
    vocab = pq.read_table(f"{enc}/vocab_user_id.parquet").to_pydict()
    raw_of = dict(zip(vocab["index"], vocab["raw"]))
    return [raw_of[u] for u in pq.read_table(f"{enc}/{split}.parquet").column("user_idx").to_pylist()]


def rekeyed(values, from_run, to_run, split):
    """`values` keyed by `from_run`'s rows of `split`, keyed instead by `to_run`'s rows of the same
    users (by raw id); users `to_run` lacks are dropped."""
    row_of = {raw: r for r, raw in enumerate(raw_users(to_run, split))}
    raw = raw_users(from_run, split)
    return {row_of[raw[u]]: v for u, v in values.items() if raw[u] in row_of}


def cluster_bootstrap(diffs, cluster_of, n=2000, seed=7):
    """95 % interval of the mean of `diffs` (by key), resampling whole clusters (a user's
    queries at several cuts together)."""
    rng = random.Random(seed)
    clusters = {}
    for key, d in diffs.items():
        clusters.setdefault(cluster_of[key], []).append(d)
    members = list(clusters.values())
    means = []
    for _ in range(n):
        picked = [members[rng.randrange(len(members))] for _ in members]
        total = sum(sum(m) for m in picked)
        means.append(total / sum(len(m) for m in picked))
    means.sort()
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def pooled(values):
    users = set.intersection(*(set(v) for v in values))
    return {u: sum(v[u] for v in values) / len(values) for u in sorted(users)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--split", default="test", choices=["test", "valid"],
                   help="valid: the validation split (runs evaluated with `[evaluate] validation = true`)")
    p.add_argument("--group", default="all", choices=["all", "cold", "warm"])
    p.add_argument("--view", default="none", choices=["none", "all", "recent"])
    p.add_argument("--metric", default="hit_rate@50")
    p.add_argument("model_a")
    p.add_argument("model_b")
    p.add_argument("--against", help="comma-separated runs model_b is read from (paired with runs by raw user id)")
    p.add_argument("runs", nargs="+", help="runs, or comma-separated groups of runs sharing an encoding")
    a = p.parse_args()
    groups = [g.split(",") for g in a.runs] if any("," in r for r in a.runs) else [a.runs]
    if a.against and len(groups) > 1:
        p.error("--against pairs one encoding's runs with another's: give the runs of one")
    against = a.against.split(",") if a.against else None
    # model_b's label says where it was read from, so the same model name can be paired.
    labels = (a.model_a, a.model_b + (" (--against)" if against else ""))
    values = {label: {} for label in labels}
    for g, runs in enumerate(groups):
        for label, m, source in ((labels[0], a.model_a, runs), (labels[1], a.model_b, against or runs)):
            rows = pooled([per_user(run, m, a.split, a.group, a.view, a.metric) for run in source])
            if source is not runs:
                rows = rekeyed(rows, source[0], runs[0], a.split)
            for u, v in rows.items():
                values[label][(g, u)] = v
    name_a, name_b = labels
    users = sorted(set(values[name_a]) & set(values[name_b]))
    mean = lambda d: sum(d[u] for u in users) / len(users)
    if len(groups) > 1:
        # One user's queries at several cuts are not independent: resample users whole.
        raw = {g: raw_users(runs[0], a.split) for g, runs in enumerate(groups)}
        cluster_of = {(g, u): raw[g][u] for g, u in users}
        interval = lambda d: cluster_bootstrap(dict(zip(users, d)), cluster_of)
        print(f"{len(set(cluster_of.values()))} distinct users over the {len(groups)} encodings; intervals resample users whole")
    else:
        interval = bootstrap
    lo, hi = interval([values[name_b][u] - values[name_a][u] for u in users])
    print(f"{a.split}, {a.group} targets, {a.view} view, {a.metric}, {len(users)} users, {len(groups)} encodings x {len(groups[0])} runs: "
          f"{name_a} {mean(values[name_a]):.4f}, {name_b} {mean(values[name_b]):.4f}, "
          f"difference {mean(values[name_b]) - mean(values[name_a]):+.4f} (95 % CI {lo:+.4f} to {hi:+.4f})")
    if a.view == "none" and a.metric.startswith("hit_rate@") and not a.against:
        k = int(a.metric.split("@")[1])
        expect = {(g, u): e for g, runs in enumerate(groups) for u, e in random_expectation(runs[0], a.split, a.group, k).items()}
        for m in (name_a, name_b):
            lo, hi = interval([values[m][u] - expect[u] for u in users])
            e = sum(expect[u] for u in users) / len(users)
            print(f"  {m} against random's expectation {e:.4f}: {mean(values[m]) - e:+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}), "
                  f"{mean(values[m]) / e:.2f}x")


if __name__ == "__main__":
    main()

"""Builds FAISS and LanceDB indexes from a pipeline's exported item vectors and checks their
top-K, seen items left out as the export does, against the exact `candidates.parquet`:
FAISS flat and LanceDB without an index must agree (they are exact searches; only exact score
ties may order differently), FAISS HNSW and LanceDB's IVF-HNSW index are reported with their
recall and must stay above a floor. Prints recall and queries/s beside the export's own HNSW
(usearch) figures from `manifest.json`.

Usage: python python/check_vector_dbs.py RUN_DIR/export RUN_DIR/ingest [--json OUT]
(run by `cargo xtask ci`)
"""

import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

os.environ.setdefault("LANCEDB_LOG", "error")  # lance warns on every new table
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from recall_outputs import vector_db  # noqa: E402

EXACT_FLOOR = 0.999  # exact searches: only ties at the K-th score may differ
INDEX_FLOOR = 0.95


def seen_items(interactions: pathlib.Path) -> dict:
    """Each user's items in chronological order (`seq`)."""
    table = pq.read_table(interactions, columns=["user_id", "item_id", "seq"]).to_pydict()
    seen: dict = {}
    for user, item, seq in zip(table["user_id"], table["item_id"], table["seq"]):
        seen.setdefault(user, []).append((seq, item))
    return {user: [item for _, item in sorted(events)] for user, events in seen.items()}


def left_out(manifest: dict, history: list) -> set:
    """What the export's seen filter left out of a user's candidates (`seen_filter`)."""
    view = manifest["seen_filter"]
    if view == "none":
        return set()
    if view == "recent":
        return set(history[-manifest["recent_window"]:])
    return set(history)


def recall(got: list, truth: dict, users: list) -> float:
    return float(np.mean([len(set(g) & set(truth[u])) / max(len(truth[u]), 1) for g, u in zip(got, users)]))


def check_model(directory: pathlib.Path, seen: dict) -> dict:
    manifest = json.loads((directory / "manifest.json").read_text())
    k = manifest["top_k"]
    item_ids, items = vector_db.read_vectors(directory / "item_embeddings.parquet", "item_id")
    user_ids, users = vector_db.read_vectors(directory / "user_embeddings.parquet", "user_id")
    candidates = pq.read_table(directory / "candidates.parquet").to_pydict()
    truth: dict = {}
    for user, item in zip(candidates["user_id"], candidates["item_id"]):
        truth.setdefault(user, []).append(item)
    user_seen = [left_out(manifest, seen.get(u, [])) for u in user_ids]
    fetch = min(len(item_ids), k + max(len(s) for s in user_seen))

    # The exact unfiltered top-K of the probe users, as the export measures its own index.
    probe = min(manifest.get("index", {}).get("probe_users") or len(user_ids), len(user_ids))
    scores = users[:probe] @ items.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    unfiltered_truth = {u: [item_ids[r] for r in row] for u, row in zip(user_ids, top)}

    def measure(search) -> dict:
        """Filtered recall against candidates.parquet (all users), and the unfiltered top-K's
        recall and queries/s on the probe users."""
        ranked = search(users, fetch)
        filtered = [vector_db.without_seen(r, s, k) for r, s in zip(ranked, user_seen)]
        start = time.perf_counter()
        plain = search(users[:probe], k)
        seconds = time.perf_counter() - start
        return {"recall": recall(filtered, truth, user_ids),
                "recall_unfiltered": recall(plain, unfiltered_truth, user_ids[:probe]),
                "queries_per_second": probe / seconds}

    results = {}
    for name, build in (("faiss_flat", vector_db.faiss_flat), ("faiss_hnsw", vector_db.faiss_hnsw)):
        start = time.perf_counter()
        index = build(items)
        built = time.perf_counter() - start

        def search(queries, n, index=index):
            _, rows = index.search(queries, n)
            return [[item_ids[r] for r in row if r >= 0] for row in rows]

        results[name] = {**measure(search), "build_seconds": built}
    with tempfile.TemporaryDirectory() as db_dir:
        for name, with_index in (("lancedb_scan", False), ("lancedb_ivf_hnsw_sq", True)):
            start = time.perf_counter()
            table = vector_db.lancedb_items(db_dir, directory, name=name, index=with_index)
            built = time.perf_counter() - start

            def search(queries, n, table=table):
                ranked = []
                for chunk in range(0, len(queries), 256):
                    ranked += vector_db.lancedb_search(table, queries[chunk : chunk + 256], n)
                return ranked

            results[name] = {**measure(search), "build_seconds": built}
    ours = manifest.get("index") or {}
    results["usearch_hnsw (export's index)"] = {
        "recall": None, "recall_unfiltered": ours.get("recall"),
        "queries_per_second": ours.get("index_queries_per_second"), "build_seconds": ours.get("build_seconds")}
    for name in ("faiss_flat", "lancedb_scan"):
        for key in ("recall", "recall_unfiltered"):
            assert results[name][key] >= EXACT_FLOOR, f"{directory.name}: {name} {key} {results[name][key]:.4f} against the exact ranking"
    for name in ("faiss_hnsw", "lancedb_ivf_hnsw_sq"):
        assert results[name]["recall"] >= INDEX_FLOOR, f"{directory.name}: {name} recall {results[name]['recall']:.4f} is below {INDEX_FLOOR}"
    return {"model": directory.name, "k": k, "users": len(user_ids), "items": len(item_ids), "results": results}


def main() -> None:
    export, raw = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out = pathlib.Path(sys.argv[sys.argv.index("--json") + 1]) if "--json" in sys.argv else None
    seen = seen_items(raw / "interactions.parquet")
    models = sorted(p for p in export.iterdir() if (p / "manifest.json").exists())
    assert models, f"no exported model under {export}"
    report = []
    for directory in models:
        r = check_model(directory, seen)
        report.append(r)
        print(f"{r['model']}: top-{r['k']} of {r['items']} items, {r['users']} users; recall against the exact "
              f"ranking with seen items left out (candidates.parquet) and without (probe users, queries/s at top-{r['k']})")
        for name, m in r["results"].items():
            number = lambda v, f: "-" if v is None else format(v, f)
            print(f"  {name:<32} recall {number(m['recall'], '.4f'):>6}  unfiltered {number(m['recall_unfiltered'], '.4f'):>6}"
                  f"  queries/s {number(m['queries_per_second'], ',.0f'):>8}  build {m['build_seconds'] or 0:.3f} s")
    if out:
        out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Checks the numpy reference towers against a pipeline's exports: every user's vector computed
from raw inputs (the ingest stage's interactions, users and items) and the export directory
alone must equal `user_embeddings.parquet` (and, for DSSM, `item_embeddings.parquet`) to 1e-5.
The ONNX towers (`user_tower.onnx`, DSSM's `item_tower.onnx`), run by onnxruntime on the same
inputs encoded, must reproduce them to 1e-5 too. Where the evaluate stage chose an item-age prior
(`evaluate/<model>/age_prior.json`), the exported vectors and release times with that file
alone must rank every test query as `<model>+age-prior` did (`recall_outputs.age_prior`).

Usage: python python/check_reference.py RUN_DIR/export RUN_DIR/ingest   (run by `cargo xtask ci`)
"""

import json
import pathlib
import sys
import time
import tomllib

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from recall_outputs.age_prior import AgePrior, read_release_times  # noqa: E402
from recall_outputs.reference import ExportedModel  # noqa: E402
from recall_outputs.vector_db import read_vectors  # noqa: E402

TOLERANCE = 1e-5
# Query vectors agree to TOLERANCE, so scores to about this: a target within it of the K-th
# best score may rank either side of it.
TIE_MARGIN = 1e-4
BATCH = 512


def run_onnx(path: pathlib.Path, feeds: dict) -> np.ndarray:
    """The graph's single output over `feeds` (the inputs it declares), in batches."""
    import onnxruntime  # only the checks need it

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in feeds]
    assert not missing, f"{path}: no values for inputs {missing} (have {sorted(feeds)})"
    rows = len(next(iter(feeds.values())))
    out = [
        session.run(None, {n: feeds[n][start : start + BATCH] for n in names})[0]
        for start in range(0, rows, BATCH)
    ]
    return np.concatenate(out)


def time_cuts(run: pathlib.Path) -> tuple:
    """The run's `encode.before` and `encode.test_from` (its saved config.toml), or Nones."""
    config = run / "config.toml"
    if not config.exists():
        return None, None
    encode = tomllib.loads(config.read_text()).get("encode", {})
    return encode.get("before"), encode.get("test_from")


def histories(interactions: pathlib.Path, before=None, test_from=None) -> dict:
    """Each user's raw item ids ordered by `seq`, ties in file order (a stable sort), as the
    encode stage keeps them: rows at or after `before` dropped; with a time split
    (`test_from`), the rows before it and the first one at or after it (the test target)."""
    columns = ["user_id", "item_id", "seq"] + (["timestamp"] if before or test_from else [])
    table = pq.read_table(interactions, columns=columns)
    users = table.column("user_id").to_numpy()
    items = table.column("item_id").to_numpy()
    seq = table.column("seq").to_numpy()
    order = np.lexsort((seq, users))  # stable: equal keys keep file order
    users, items = users[order], items[order]
    times = table.column("timestamp").to_numpy()[order] if len(columns) > 3 else None
    if before is not None:
        kept = times < before
        users, items, times = users[kept], items[kept], times[kept]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    out = {}
    for s, e in zip(starts, ends):
        if test_from is not None:
            after = np.flatnonzero(times[s:e] >= test_from)
            e = s + after[0] + 1 if len(after) else e
        out[int(users[s])] = items[s:e].tolist()
    return out


def side_rows(path: pathlib.Path, id_column: str) -> dict:
    if not path.exists():
        return {}
    rows = pq.read_table(path).to_pylist()
    return {row[id_column]: row for row in rows}


def vocabulary(path: pathlib.Path) -> dict:
    """An encode vocabulary, index to raw id."""
    table = pq.read_table(path, columns=["index", "raw"]).to_pydict()
    return dict(zip(table["index"], table["raw"]))


def test_queries(encode: pathlib.Path) -> list:
    """The test split's queries by row, in raw ids: the user, the history before the target,
    the targets (the row's, then with a time split's `test_targets = "after-cut"` the user's
    later ones), and the first target's time (when the query is served)."""
    users, items = (vocabulary(encode / f"vocab_{name}.parquet") for name in ["user_id", "item_id"])
    sequences = {
        row["user_idx"]: row for row in pq.read_table(encode / "sequences.parquet").to_pylist()
    }
    later = {}
    if (encode / "later_targets.parquet").exists():
        for row in pq.read_table(encode / "later_targets.parquet").to_pylist():
            later.setdefault(row["user_idx"], []).append(items[row["item_idx"]])
    rows = pq.read_table(encode / "test.parquet", columns=["user_idx", "position"]).to_pylist()
    out = []
    for row in rows:
        sequence = sequences[row["user_idx"]]
        p = row["position"]
        out.append(
            (
                users[row["user_idx"]],
                [items[i] for i in sequence["items"][:p]],
                [items[sequence["items"][p]]] + later.get(row["user_idx"], []),
                sequence["timestamps"][p],
            )
        )
    return out


def hits(scores: np.ndarray, targets: list, k: int) -> tuple:
    """Whether any of each row's targets (item rows) is in its top `k`, and the best target's
    score minus the k-th best (how far from the boundary: near 0 a tie the float order may
    break either way)."""
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    best = np.array([scores[r, t].max() for r, t in enumerate(targets)])
    return best >= kth, best - kth


def check_age_prior(
    model: ExportedModel, directory: pathlib.Path, users: dict, item_ids: list, vectors: np.ndarray
) -> str:
    """`<model>+age-prior`'s test hits (and the model's own, which shows the queries are
    evaluate's) from the reference's query vectors, the exported items (`item_ids`, `vectors`,
    their release times) and `age_prior.json`."""
    run = directory.parent.parent
    choice = run / "evaluate" / directory.name / "age_prior.json"
    if not choice.exists():
        return ""
    results = json.loads((run / "evaluate" / "results.json").read_text())
    if results.get("test_users_sampled_from"):
        return "; age prior not checked (the evaluate stage sampled its test users)"
    prior = AgePrior.read(choice)
    k = prior.k
    queries = test_queries(run / "encode")
    released = read_release_times(directory / "item_embeddings.parquet")
    row_of = {item: i for i, item in enumerate(item_ids)}
    query = np.stack([model.user_vector(h, user_id=u, user=users.get(u)) for u, h, _, _ in queries])
    targets = [np.array([row_of[t] for t in ts]) for _, _, ts, _ in queries]
    times = np.array([[np.nan if t is None else float(t)] for _, _, _, t in queries])
    scores = query.astype(np.float64) @ vectors.T.astype(np.float64)
    report = []
    for name, bias in [
        (directory.name, 0.0),
        (f"{directory.name}+age-prior", prior.score_bias(released[None, :], times)),
    ]:
        got, margin = hits(scores + bias, targets, k)
        per_user = pq.read_table(run / "evaluate" / name / "per_user_test_none.parquet").to_pydict()
        expected = np.zeros(len(queries), dtype=bool)
        expected[per_user["user_row"]] = np.array(per_user[f"hit_rate@{k}"]) > 0.5
        differ = got != expected
        # A query whose target sits at the K-th score within float rounding may fall either way.
        far = differ & (np.abs(margin) > TIE_MARGIN)
        assert not far.any(), (
            f"{name}: {int(far.sum())} of {len(queries)} test queries hit@{k} differently from the "
            f"evaluate stage (first rows {np.flatnonzero(far)[:5].tolist()})"
        )
        report.append(f"{name} HitRate@{k} {got.mean():.4f} ({int(differ.sum())} at a tie)")
    return f"; beta {prior.beta}: " + ", ".join(report)


def check_model(directory: pathlib.Path, raw: pathlib.Path) -> str:
    start = time.perf_counter()
    model = ExportedModel(directory)
    items = side_rows(raw / "items.parquet", "item_id")
    model.set_items(items.values())
    users = side_rows(raw / "users.parquet", "user_id")
    history = histories(raw / "interactions.parquet", *time_cuts(directory.parent.parent))

    ids, expected_users = read_vectors(directory / "user_embeddings.parquet", "user_id")
    got = np.stack([model.user_vector(history[u], user_id=u, user=users.get(u)) for u in ids])
    user_error = float(np.abs(got - expected_users).max())
    assert user_error <= TOLERANCE, f"{directory.name}: user vectors differ by {user_error:.2e}"

    item_ids, expected_items = read_vectors(directory / "item_embeddings.parquet", "item_id")
    item_error = float(np.abs(model.item_vectors() - expected_items).max())
    assert item_error <= TOLERANCE, f"{directory.name}: item vectors differ by {item_error:.2e}"
    spec = model.layout["user_input"]["encoder"]
    encoder = spec["kind"] + (f" ({spec['block']} blocks)" if "block" in spec else "")
    report = (
        f"{directory.name} ({encoder} user tower): {len(ids)} users, largest difference {user_error:.1e}; "
        f"items {item_error:.1e}"
    )

    onnx_user = directory / "user_tower.onnx"
    if onnx_user.exists():
        feeds = model.user_tower_inputs([(history[u], u, users.get(u)) for u in ids])
        got = run_onnx(onnx_user, feeds)
        error = float(np.abs(got - expected_users).max())
        assert error <= TOLERANCE, f"{onnx_user}: user vectors differ by {error:.2e}"
        report += f"; ONNX user tower {error:.1e}"
    onnx_item = directory / "item_tower.onnx"
    if onnx_item.exists():
        feeds = model.item_tower_inputs(item_ids)
        got = run_onnx(onnx_item, feeds)
        error = float(np.abs(got - expected_items).max())
        assert error <= TOLERANCE, f"{onnx_item}: item vectors differ by {error:.2e}"
        report += f", ONNX item tower {error:.1e}"
        # A cold item's vector is what a brand-new item with its features gets: the same
        # inputs with the row the vocabulary gives an unknown id.
        cold_from = model.layout["item_input"]["parts"][0].get("cold_from")
        cold = feeds["item"] >= cold_from if cold_from is not None else np.zeros(0, dtype=bool)
        if cold.any():
            new = {name: values[cold] for name, values in feeds.items()}
            new["item"] = np.full(int(cold.sum()), 1, dtype=np.int64)
            error = float(np.abs(run_onnx(onnx_item, new) - expected_items[cold]).max())
            assert error <= TOLERANCE, f"{onnx_item}: cold items as new ids differ by {error:.2e}"
            report += f" ({int(cold.sum())} cold items as unknown ids {error:.1e})"
    report += check_age_prior(model, directory, users, item_ids, expected_items)
    return report + f" ({time.perf_counter() - start:.1f} s)"


def main() -> None:
    export, raw = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    models = sorted(p for p in export.iterdir() if (p / "manifest.json").exists())
    assert models, f"no exported model under {export}"
    for directory in models:
        print("reference towers:", check_model(directory, raw))


if __name__ == "__main__":
    main()

"""Checks the numpy reference towers against a pipeline's exports: every user's vector computed
from raw inputs (the ingest stage's interactions, users and items) and the export directory
alone must equal `user_embeddings.parquet` (and, for DSSM, `item_embeddings.parquet`) to 1e-5.

Usage: python python/check_reference.py RUN_DIR/export RUN_DIR/ingest   (run by `cargo xtask ci`)
"""

import pathlib
import sys
import time

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from recall_outputs.reference import ExportedModel  # noqa: E402
from recall_outputs.vector_db import read_vectors  # noqa: E402

TOLERANCE = 1e-5


def histories(interactions: pathlib.Path) -> dict:
    """Each user's raw item ids ordered by `seq`, ties in file order (a stable sort)."""
    table = pq.read_table(interactions, columns=["user_id", "item_id", "seq"])
    users = table.column("user_id").to_numpy()
    items = table.column("item_id").to_numpy()
    seq = table.column("seq").to_numpy()
    order = np.lexsort((seq, users))  # stable: equal keys keep file order
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {int(users[s]): items[s:e].tolist() for s, e in zip(starts, ends)}


def side_rows(path: pathlib.Path, id_column: str) -> dict:
    if not path.exists():
        return {}
    rows = pq.read_table(path).to_pylist()
    return {row[id_column]: row for row in rows}


def check_model(directory: pathlib.Path, raw: pathlib.Path) -> str:
    start = time.perf_counter()
    model = ExportedModel(directory)
    items = side_rows(raw / "items.parquet", "item_id")
    model.set_items(items.values())
    users = side_rows(raw / "users.parquet", "user_id")
    history = histories(raw / "interactions.parquet")

    ids, expected = read_vectors(directory / "user_embeddings.parquet", "user_id")
    got = np.stack([model.user_vector(history[u], user_id=u, user=users.get(u)) for u in ids])
    user_error = float(np.abs(got - expected).max())
    assert user_error <= TOLERANCE, f"{directory.name}: user vectors differ by {user_error:.2e}"

    _, expected = read_vectors(directory / "item_embeddings.parquet", "item_id")
    item_error = float(np.abs(model.item_vectors() - expected).max())
    assert item_error <= TOLERANCE, f"{directory.name}: item vectors differ by {item_error:.2e}"
    encoder = model.layout["user_input"]["encoder"]["kind"]
    return (
        f"{directory.name} ({encoder} user tower): {len(ids)} users, largest difference {user_error:.1e}; "
        f"items {item_error:.1e} ({time.perf_counter() - start:.1f} s)"
    )


def main() -> None:
    export, raw = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    models = sorted(p for p in export.iterdir() if (p / "manifest.json").exists())
    assert models, f"no exported model under {export}"
    for directory in models:
        print("reference towers:", check_model(directory, raw))


if __name__ == "__main__":
    main()

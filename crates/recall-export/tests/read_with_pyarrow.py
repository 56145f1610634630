"""Reads a pipeline's exports with pyarrow, as a user's Python job would, and checks them
against what the Rust side wrote: row counts and checksums from manifest.json, the vector
dimension from the file metadata, unit-length vectors, and candidate scores equal to the dot
products of the exported user and item vectors, best first.

Usage: python3 read_with_pyarrow.py RUN_DIR/export   (run by `cargo xtask ci`)
"""

import hashlib
import json
import pathlib
import sys

import numpy as np
import pyarrow.parquet as pq


def check_model(directory: pathlib.Path) -> str:
    manifest = json.loads((directory / "manifest.json").read_text())
    for entry in manifest["files"]:
        path = directory / entry["file"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{path}: checksum differs from the manifest"
        if path.suffix == ".parquet":
            rows = pq.read_metadata(path).num_rows
            assert rows == entry["rows"], f"{path}: {rows} rows, manifest says {entry['rows']}"

    dim = manifest["dim"]
    vectors = {}
    for entity, id_column in (("item", "item_id"), ("user", "user_id")):
        path = directory / f"{entity}_embeddings.parquet"
        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in pq.read_metadata(path).metadata.items()}
        assert meta["recall.dim"] == str(dim) and meta["recall.entity"] == entity, meta
        assert meta["recall.model"] == manifest["model"], meta
        assert table.schema.field("embedding").type.list_size == dim, table.schema
        matrix = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, dim)
        norms = np.linalg.norm(matrix, axis=1)
        assert np.allclose(norms, 1.0, atol=1e-4), f"{path}: vectors are not unit length"
        ids = table.column(id_column).to_pylist()
        assert len(set(ids)) == len(ids), f"{path}: duplicate ids"
        vectors[entity] = dict(zip(ids, matrix))

    candidates = pq.read_table(directory / "candidates.parquet").to_pydict()
    k = manifest["top_k"]
    per_user = {}
    for user in candidates["user_id"]:
        per_user[user] = per_user.get(user, 0) + 1
    assert len(per_user) == manifest["users"], "a user without candidates"
    # Fewer than K only where seen-item filtering left fewer items.
    assert max(per_user.values()) == k, "more or fewer than K candidates per user"
    for row in range(0, len(candidates["user_id"]), 97):
        user, item = candidates["user_id"][row], candidates["item_id"][row]
        dot = float(vectors["user"][user] @ vectors["item"][item])
        assert abs(dot - candidates["score"][row]) < 1e-4, (row, dot, candidates["score"][row])
        if candidates["rank"][row] > 1:
            assert candidates["score"][row - 1] >= candidates["score"][row] - 1e-6
    return f"{directory.name}: {len(vectors['item'])} items, {len(vectors['user'])} users, dim {dim}, {k} candidates per user"


def main() -> None:
    root = pathlib.Path(sys.argv[1])
    models = sorted(p for p in root.iterdir() if (p / "manifest.json").exists())
    assert models, f"no exported model under {root}"
    for directory in models:
        print("pyarrow read", check_model(directory))


if __name__ == "__main__":
    main()

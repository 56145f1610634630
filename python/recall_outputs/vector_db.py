"""Load an export's item vectors into FAISS or LanceDB with the project's similarity: inner
product on unit vectors (the models' score is cosine / temperature, so the ranking is the inner
product's), and query them with the exported user vectors.

    ids, items = read_vectors("runs/default/export/youtubednn/item_embeddings.parquet", "item_id")
    index = faiss_flat(items)                  # exact; faiss_hnsw(items) for a graph index
    scores, rows = index.search(user_vectors, 100)
    table = lancedb_items("lancedb-dir", "runs/default/export/youtubednn")   # on disk
    hits = lancedb_search(table, user_vectors, 100)                      # ids, best first

A user's candidates usually leave out what the user has seen: ask for `k + len(seen)` and drop
the seen ones (`without_seen`), which is exact for an exact search.
"""

from __future__ import annotations

import pathlib
from typing import Iterable, Sequence

import numpy as np
import pyarrow.parquet as pq


def read_vectors(path: str | pathlib.Path, id_column: str) -> tuple[list, np.ndarray]:
    """Ids and the `[rows, dim]` float32 matrix of an `*_embeddings.parquet` file."""
    table = pq.read_table(path, columns=[id_column, "embedding"])
    dim = table.schema.field("embedding").type.list_size
    matrix = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32)
    return table.column(id_column).to_pylist(), np.ascontiguousarray(matrix.reshape(-1, dim))


def faiss_flat(items: np.ndarray):
    """An exact inner-product index (`faiss.IndexFlatIP`); row i is item row i."""
    import faiss

    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    return index


def faiss_hnsw(items: np.ndarray, m: int = 32, ef_construction: int = 200, ef_search: int = 128):
    """An HNSW graph over inner product (`faiss.IndexHNSWFlat`, METRIC_INNER_PRODUCT)."""
    import faiss

    index = faiss.IndexHNSWFlat(items.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.hnsw.efSearch = ef_search
    index.add(items)
    return index


def lancedb_items(db_dir: str | pathlib.Path, export_dir: str | pathlib.Path, name: str = "items",
                  index: bool = False):
    """A LanceDB table (embedded, on disk in `db_dir`) of the export's items: columns
    `item_id`, `index_key`, `vector`. With `index`, an IVF-HNSW index with scalar
    quantisation over the dot product (without, searches are exact scans)."""
    import lancedb

    table = pq.read_table(pathlib.Path(export_dir) / "item_embeddings.parquet")
    table = table.rename_columns(["vector" if c == "embedding" else c for c in table.column_names])
    db = lancedb.connect(str(db_dir))
    lance_table = db.create_table(name, data=table, mode="overwrite")
    if index:
        from lancedb.index import IvfHnswSq

        lance_table.create_index("vector", config=IvfHnswSq(distance_type="dot"))
    return lance_table


def lancedb_search(table, users: np.ndarray, k: int, refine_factor: int | None = None) -> list[list]:
    """Item ids of the `k` best items (largest inner product) for each row of `users`."""
    query = table.search(list(users)).distance_type("dot").limit(k)
    if refine_factor:
        query = query.refine_factor(refine_factor)
    hits = query.to_arrow()
    # LanceDB's dot distance is 1 - inner product: ascending distance is best first.
    out: list[list] = [[] for _ in range(len(users))]
    if "query_index" in hits.column_names:
        queries = hits.column("query_index").to_numpy()
    else:  # one query: LanceDB leaves the column out
        queries = np.zeros(hits.num_rows, dtype=np.int64)
    order = np.lexsort((hits.column("_distance").to_numpy(), queries))
    queries = queries[order]
    ids = np.asarray(hits.column("item_id").to_pylist(), dtype=object)[order]
    for q, item in zip(queries, ids):
        out[q].append(item)
    return out


def without_seen(ranked: Sequence, seen: Iterable, k: int) -> list:
    """The first `k` of `ranked` that are not in `seen`."""
    seen = set(seen)
    return [i for i in ranked if i not in seen][:k]

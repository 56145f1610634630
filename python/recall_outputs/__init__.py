"""Use a recall pipeline's exports from Python.

- `reference`: the user tower (and DSSM's item tower) in numpy, from the exported files alone:
  `ExportedModel(export_dir).user_vectors(...)` reproduces `user_embeddings.parquet`.
- `vector_db`: load `item_embeddings.parquet` into FAISS or LanceDB with the project's
  similarity (inner product on unit vectors) and query them.
- `age_prior`: the evaluate stage's item-age prior (`evaluate/<model>/age_prior.json`) as a
  per-item score bias at a query's time, from the exported items' `release_time`.

Needs numpy and pyarrow; `vector_db` also faiss-cpu and/or lancedb.
"""

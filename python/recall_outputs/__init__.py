"""Use a recall pipeline's exports from Python.

- `reference`: the user tower (and DSSM's item tower) in numpy, from the exported files alone:
  `ExportedModel(export_dir).user_vectors(...)` reproduces `user_embeddings.parquet`.
- `vector_db`: load `item_embeddings.parquet` into FAISS or LanceDB with the project's
  similarity (inner product on unit vectors) and query them.

Needs numpy and pyarrow; `vector_db` also faiss-cpu and/or lancedb.
"""

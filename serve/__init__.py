"""embedkd's asymmetric search service: documents embedded by the teacher, queries by the student.

Modules: :mod:`serve.index` (FAISS), :mod:`serve.store` (SQLite documents + write-ahead log),
:mod:`serve.snapshot` (atomic index snapshots), :mod:`serve.service` (the engine, no HTTP),
:mod:`serve.milvus_service` (the same engine over a Milvus collection, :mod:`serve.milvus_store`),
:mod:`serve.app` / :mod:`serve.routes` (FastAPI), :mod:`serve.builder` (``embedkd index``).
"""

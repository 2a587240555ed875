"""Results artifacts: the versioned Parquet schema (``results.schema``), its reader and writer
(``results.io``), and where they live: a directory or an object store (``results.storage``).

Import the submodules directly (``from results.io import write_records``). Nothing is
re-exported here so that ``python -m results.schema`` runs without a double import, and so
that this package stays importable without torch or Ray.
"""

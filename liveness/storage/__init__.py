"""Shared storage plumbing (one SQLite file or one MongoDB database for all stores): the SQLite
file (``sqlite``) and the versioned documents that session-like stores map onto (``documents``)."""

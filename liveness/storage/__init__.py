"""Shared storage plumbing (one SQLite file or one MongoDB database for all stores)."""

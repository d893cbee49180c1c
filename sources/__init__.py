"""Readers (files, SQL, DuckDB, frames) and presets that turn any export into canonical columns."""

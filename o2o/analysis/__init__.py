"""Reports: learning curves, tables, statistics."""

"""Local history: every cycle's samples on disk, for standalone nodes and Prometheus backfill."""

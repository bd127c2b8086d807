"""Opt-in GPU power capping that holds the node under its power envelope (docs/power.md)."""

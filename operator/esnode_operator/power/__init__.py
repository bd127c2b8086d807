"""A fleet's power summary from its node reports: pure summary and the per-fleet loop."""

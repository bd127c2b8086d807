"""OTLP push (docs/otlp.md): each cycle's snapshot sent as OTLP metrics over HTTP, opt-in."""

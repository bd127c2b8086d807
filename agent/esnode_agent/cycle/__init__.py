"""One collection cycle: the collector protocol, the loop, the snapshot it publishes, its self-metrics."""

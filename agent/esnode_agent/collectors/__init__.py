"""One module per source. The registry (registry.py) is apart, so importing one collector imports only it."""

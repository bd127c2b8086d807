"""`esnode-agent top`: a live terminal view of a running agent (optional extra `tui`)."""

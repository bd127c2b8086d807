"""What the agent serves: exposition rendered once per cycle, the status view, and the HTTP app."""

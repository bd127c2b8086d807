"""The agent's configuration: one typed model, and the sources it is layered from."""

"""Node reports: the EsnodeNode model, when to write, and the Kubernetes writer."""

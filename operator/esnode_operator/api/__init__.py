"""The operator's API: EsnodeFleet models, their structural schema, and the generated CRDs."""

"""Applying a fleet's children and writing what was seen into its status."""

"""Pure builders of the objects a fleet owns."""

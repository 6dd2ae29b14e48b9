"""What the comparison measures beyond errors: similarity, implicit weights, probing, interpolation,
ICL against fine-tuning, and tuned GD against a trained GD-layer network."""

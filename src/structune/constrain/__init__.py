"""Schema-constrained decoding for local models, on llguidance."""

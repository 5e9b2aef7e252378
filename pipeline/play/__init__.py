"""Play the trained world model with the keyboard beside the real game: ``python -m pipeline.play``."""

"""The hosts a rollout runs on: the pipeline's own tokenizer + dynamics model, and FAR."""

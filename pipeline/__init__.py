"""Replay videos -> video world model -> frame-retention rollout benchmark.

The library behind the DVC stages in ``stages/``; every module holds one idea.
"""

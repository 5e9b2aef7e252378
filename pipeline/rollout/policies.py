"""The threshold baselines of ar-video-kv-temporal-policy, and :func:`load_policy` for built-in and
user policies.

The baselines only say what they would like (thresholds as published; priorities informational);
the loop enforces the budget on top. ``BASELINES`` names the built-in policies that are baselines.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from pipeline.rollout.api import ChunkDecision, FrameMeta, RolloutState, TemporalCachePlan
from pipeline.rollout.retention import BUDGET_BASELINES, OURS


class PolicyLoadError(ValueError):
    """A policy spec in params or on the command line cannot be resolved to a policy."""


class Baseline:
    """A threshold baseline: decides from the FrameMeta list alone, never from the budget."""

    name = "baseline"
    uses_budget_state = False


def _plan(family: str, decisions: list[tuple[FrameMeta, str]], **info) -> TemporalCachePlan:
    return TemporalCachePlan(
        chunk_decisions=[ChunkDecision(m.chunk_id, action, priority=m.recentness) for m, action in decisions],
        retention_family=family,
        **info,
    )


class FullHistory(Baseline):
    """Keep everything: the host's quality ceiling (the loop still enforces a finite budget)."""

    name = "full_history"

    def build_temporal_cache_plan(self, chunk_meta_list, rollout_state, budget_state):
        return _plan("full", [(m, "keep") for m in chunk_meta_list])


class RecentWindow(Baseline):
    """Naive recency: keep the two newest frames (recentness >= 0.34)."""

    name = "recent_window"

    def build_temporal_cache_plan(self, chunk_meta_list, rollout_state, budget_state):
        return _plan("recency", [(m, "keep" if m.recentness >= 0.34 else "drop") for m in chunk_meta_list])


class PackCache(Baseline):
    """Anchor first (PackCache, arXiv:2601.04359): keyframes are kept long-term, drifted frames
    dropped, recent frames similar to their predecessor kept."""

    name = "packcache"

    def build_temporal_cache_plan(self, chunk_meta_list, rollout_state, budget_state):
        def action(m: FrameMeta) -> str:
            if m.keyframe_score >= 0.72:
                return "demote_to_long_term"
            if m.feature_drift >= 0.45:
                return "drop"
            if m.recentness >= 0.25 and m.temporal_similarity >= 0.85:
                return "keep"
            return "drop"

        return _plan("anchor", [(m, action(m)) for m in chunk_meta_list], anchor_preservation_rule="keyframe>=0.72")


class CausalCacheVDM(Baseline):
    """Queue with long-term residents (Ca2-VDM, arXiv:2411.16375): keyframes and residents are
    promoted, drifted frames leave the queue, everything else stays."""

    name = "causalcache_vdm"

    def build_temporal_cache_plan(self, chunk_meta_list, rollout_state, budget_state):
        def action(m: FrameMeta) -> str:
            if m.keyframe_score >= 0.75 or m.long_term_resident:
                return "demote_to_long_term"
            if m.feature_drift >= 0.50:
                return "drop"
            return "keep"

        return _plan("queue", [(m, action(m)) for m in chunk_meta_list])


class FlowCache(Baseline):
    """Chunkwise with boundary detection (FlowCache, arXiv:2602.10825): everything before the
    newest scene boundary is dropped; the rest is scored by a flow of similarity and drift."""

    name = "flowcache"

    def build_temporal_cache_plan(self, chunk_meta_list, rollout_state, budget_state):
        boundaries = [m.chunk_id for m in chunk_meta_list if m.boundary_score >= 0.45]
        last_boundary = max(boundaries) if boundaries else -1

        def action(m: FrameMeta) -> str:
            if m.chunk_id < last_boundary:
                return "drop"
            flow = m.temporal_similarity * (1 - m.feature_drift) * (1 - 0.3 * m.motion_strength)
            if m.keyframe_score >= 0.75:
                return "keep"
            if flow >= 0.70 or m.recentness >= 0.35:
                return "keep"
            if flow >= 0.40:
                return "demote_to_long_term"
            return "drop"

        return _plan(
            "chunkwise",
            [(m, action(m)) for m in chunk_meta_list],
            boundary_transition_rule="drop before newest boundary>=0.45",
            chunkwise_reuse=True,
        )


THRESHOLD_BASELINES = (RecentWindow, PackCache, CausalCacheVDM, FlowCache, FullHistory)  # ar-video-kv-temporal-policy's
POLICIES = {cls.name: cls for cls in (*THRESHOLD_BASELINES, *BUDGET_BASELINES, *OURS)}  # load_policy's table
BASELINES: tuple[str, ...] = tuple(cls.name for cls in (*THRESHOLD_BASELINES, *BUDGET_BASELINES))

# A policy file of the ar-video-kv-temporal-policy harness is its VideoTemporalKVPolicy class cut
# from the harness's own file, where these names were defined: a file loaded by path sees them
# (its own imports, if any, take precedence).
HARNESS_GLOBALS = {
    "ChunkDecision": ChunkDecision, "TemporalCachePlan": TemporalCachePlan, "FrameMeta": FrameMeta,
    "RolloutState": RolloutState, "Any": Any, "Dict": Dict, "List": List, "Optional": Optional, "Tuple": Tuple,
}


def _import_class(spec: str):
    target, sep, cls_name = spec.rpartition(":")
    if not sep or not target or not cls_name:
        raise PolicyLoadError(
            f"policy {spec!r}: not a baseline or built-in policy ({', '.join(POLICIES)}) "
            "and not module:Class or path/file.py:Class"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise PolicyLoadError(f"policy {spec!r}: file {path} not found")
        mod_name = f"_user_policy_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        module.__dict__.update(HARNESS_GLOBALS)  # files written for the published harness use these unimported
        sys.modules[mod_name] = module  # dataclasses and pickling look modules up here
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise PolicyLoadError(f"policy {spec!r}: importing {path} failed: {exc!r}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise PolicyLoadError(f"policy {spec!r}: cannot import module {target!r}: {exc}") from exc
    try:
        return getattr(module, cls_name)
    except AttributeError:
        raise PolicyLoadError(f"policy {spec!r}: {target} has no attribute {cls_name!r}") from None


def policy_origin(policy) -> str:
    """``file.py:Class`` where a policy's class is defined (relative to the working directory
    when under it), for error messages."""
    cls = type(policy)
    try:
        path = inspect.getfile(cls)
    except (TypeError, OSError):  # defined interactively or in a built-in module
        return f"{cls.__module__}:{cls.__qualname__}"
    rel = os.path.relpath(path)
    return f"{path if rel.startswith('..') else rel}:{cls.__qualname__}"


def load_policy(spec: str):
    """Instantiate (without arguments) a built-in policy's name (POLICIES), ``module:Class`` or
    ``path/to/file.py:Class``; raises PolicyLoadError."""
    cls = POLICIES.get(spec) or _import_class(spec)
    try:
        policy = cls()
    except Exception as exc:
        raise PolicyLoadError(f"policy {spec!r}: {cls!r}() failed: {exc!r}") from exc
    if not callable(getattr(policy, "build_temporal_cache_plan", None)):
        raise PolicyLoadError(f"policy {spec!r}: {cls.__name__} has no build_temporal_cache_plan method")
    if not isinstance(getattr(policy, "name", None), str):
        policy.name = spec if spec in POLICIES else cls.__name__
    return policy



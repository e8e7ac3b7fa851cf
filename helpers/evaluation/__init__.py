"""Evaluation: metrics, paired statistics, the cached runner, the choice of alpha, sanity checks, timing, the report.

May import :mod:`helpers.cam` and :mod:`helpers.data`; never the teaching package.
"""
from .runner import EvalConfig, Evaluation, MethodSpec, evaluate

__all__ = ["EvalConfig", "Evaluation", "MethodSpec", "evaluate"]

"""Several random-intercept terms: sufficient statistics and the exact profiled criterion.

Pipeline: grouping factors (:class:`RandomTerms`) -> one pass over the rows
(:func:`compute_vc_stats`, mergeable :class:`VCStats`) -> the criterion as a function of
the variance ratios (:class:`VCProblem`: ``evaluate``, ``fixed_effects``, ``ranef``,
``reduce_to_term``).
"""

from .criterion import MAX_DENSE_BLOCK, VCEvaluation, VCProblem
from .reduction import TermReduction
from .statistics import PairTable, VCStats, compute_vc_stats
from .terms import RandomTerms, TermStructure

__all__ = [
    "MAX_DENSE_BLOCK",
    "PairTable",
    "RandomTerms",
    "TermReduction",
    "TermStructure",
    "VCEvaluation",
    "VCProblem",
    "VCStats",
    "compute_vc_stats",
]

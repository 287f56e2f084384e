"""Several random-intercept terms: sufficient statistics, the exact profiled criterion and
its global minimization.

Pipeline: grouping factors (:class:`RandomTerms`) -> one pass over the rows
(:func:`compute_vc_stats`, mergeable :class:`VCStats`) -> the criterion as a function of
the variance ratios (:class:`VCProblem`: ``evaluate``, ``fixed_effects``, ``ranef``,
``reduce_to_term``) -> every local minimum over the box of ratios
(:func:`find_optima_terms`, :class:`VCOptSummary`).
"""

from .criterion import MAX_DENSE_BLOCK, VCEvaluation, VCProblem
from .lme4_start import lme4_start_theta, lme4_start_theta_from_data
from .optimizer import (
    Refinement,
    TermBoundary,
    VCOptimum,
    VCOptSummary,
    choose_search,
    find_optima_terms,
)
from .reduction import TermReduction
from .statistics import PairTable, VCStats, compute_vc_stats, merge_vc_stats
from .terms import RandomTerms, TermStructure

__all__ = [
    "MAX_DENSE_BLOCK",
    "PairTable",
    "RandomTerms",
    "Refinement",
    "TermBoundary",
    "TermReduction",
    "TermStructure",
    "VCEvaluation",
    "VCOptSummary",
    "VCOptimum",
    "VCProblem",
    "VCStats",
    "choose_search",
    "compute_vc_stats",
    "find_optima_terms",
    "lme4_start_theta",
    "lme4_start_theta_from_data",
    "merge_vc_stats",
]

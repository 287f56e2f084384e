"""Several random-intercept terms (issue 12): the global search over the variance ratios.

(The engine's exports, ``VCProblem`` and the statistics, come from the engine's branch.)
"""

from .lme4_start import lme4_start_theta, lme4_start_theta_from_data
from .optimizer import (
    Refinement,
    TermBoundary,
    VCOptimum,
    VCOptSummary,
    choose_search,
    find_optima_terms,
)

__all__ = [
    "Refinement",
    "TermBoundary",
    "VCOptSummary",
    "VCOptimum",
    "choose_search",
    "find_optima_terms",
    "lme4_start_theta",
    "lme4_start_theta_from_data",
]

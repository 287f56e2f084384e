"""reml_engine: exact profiled REML and ML for linear mixed models with random intercepts.

The pipeline, one subpackage per stage (lme4's ``lFormula -> mkLmerDevfun ->
optimizeLmer -> mkMerMod``)::

    frontend/   formula + data -> Design              (parse, check, X, y, groups)
    core/       Design -> sufficient statistics        (numba kernels, pooled by group size)
                       -> the criterion in tau         (closed form, identifiability checks)
                       -> every local optimum          (global scan, boundary diagnosis)
                       -> LmerFit                      (immutable result)
    inference/  LmerFit -> tests, intervals, df, bootstrap, predictions
    panel/      LmerFit -> within/between/pooled estimators, Hausman, Mundlak
    report/     LmerFit -> text and HTML summary, plots, the criterion curve
    scaleout/   chunks, Dask, Parquet -> the same statistics, merged -> the same core

:func:`lmer` and :func:`fit` (in :mod:`reml_engine.api`) run the whole chain.

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
>>> round(m.criterion, 4)
16.1726
>>> [round(o.criterion, 3) for o in m.optima]
[20.593, 16.173]
"""

from __future__ import annotations

from . import _moved
from . import datasets as datasets  # rl.datasets.sleepstudy(), ...: the example data
from .api import fit, lmer, load_seed
from .core.criterion import (
    CriterionBatch,
    CriterionParts,
    criterion,
    criterion_derivative,
    criterion_parts,
    evaluate,
)
from .core.fitting import build_fit, fit_design, fit_statistics, fit_stats
from .core.many import ManyFits
from .core.optimizer import Optimum, OptSummary, find_optima
from .core.problem import CriterionProblem, criterion_problem
from .core.results import Boundary, CompoundSymmetryFit, LmerFit, LocalOptimum
from .core.statistics import (
    GroupStats,
    PooledStats,
    SufficientStatistics,
    compute_group_stats,
    sufficient_statistics,
)
from .core.terms_results import TermsFit, TermsOptimum
from .errors import DegenerateCriterionError, ModelDataError, ModelDataWarning
from .frontend.design import build_design, design_from_arrays
from .frontend.transforms import between, within
from .inference.fixed_tests import anova_type3, coef_table, contrast_test
from .inference.intervals import confint
from .inference.model_comparison import AnovaResult, OLSFit, anova, ols
from .inference.variance_tests import VarianceTest, test_random_intercept
from .panel.compare import compare_fe_re
from .panel.estimators import LeastSquaresFit, between_estimator, pooled_estimator, within_estimator
from .panel.hausman import HausmanTest, MundlakTest, hausman, mundlak
from .report.criterion_curve import CriterionProfile, ProfilePoint, criterion_profile, profile_criterion

__version__ = "0.1.0"

# Old module paths (reml_engine.stats, reml_engine.design, ...) keep working for one
# release, with a DeprecationWarning naming the new path.
_moved.install()

__all__ = [
    "CriterionProblem",
    "SufficientStatistics",
    "build_fit",
    "criterion_problem",
    "fit_statistics",
    "sufficient_statistics",
    "build_design",
    "design_from_arrays",
    "fit_design",
    "Boundary",
    "CompoundSymmetryFit",
    "CriterionBatch",
    "CriterionParts",
    "DegenerateCriterionError",
    "GroupStats",
    "LmerFit",
    "TermsFit",
    "TermsOptimum",
    "LocalOptimum",
    "ManyFits",
    "ModelDataError",
    "ModelDataWarning",
    "OptSummary",
    "Optimum",
    "PooledStats",
    "compute_group_stats",
    "CriterionProfile",
    "HausmanTest",
    "LeastSquaresFit",
    "MundlakTest",
    "ProfilePoint",
    "between",
    "between_estimator",
    "compare_fe_re",
    "criterion_profile",
    "hausman",
    "mundlak",
    "pooled_estimator",
    "profile_criterion",
    "within",
    "within_estimator",
    "criterion",
    "criterion_derivative",
    "criterion_parts",
    "evaluate",
    "find_optima",
    "fit",
    "fit_stats",
    "lmer",
    "load_seed",
    "AnovaResult",
    "OLSFit",
    "VarianceTest",
    "anova",
    "anova_type3",
    "coef_table",
    "confint",
    "contrast_test",
    "ols",
    "test_random_intercept",
]

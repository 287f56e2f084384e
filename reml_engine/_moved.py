"""The module paths of the flat layout, kept for one release.

Before the subpackages, every module sat at the top (``reml_engine.stats``,
``reml_engine.design``, ...), and docs and scripts import from there. Each old path in
:data:`MOVED` still imports: it gives a module whose attributes are those of the new
module (the same objects, so ``isinstance`` and pickles keep working), and every
attribute read from it issues a ``DeprecationWarning`` that names the new path.

One table here instead of a shim file per old module keeps the package's file list the
pipeline's. ``reml_engine.criterion``, ``.confint`` and ``.anova`` get no stand-in: they
are the package's functions ``rl.criterion``, ``rl.confint`` and ``rl.anova``, which a
submodule of the same name would overwrite on import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: Old module (under ``reml_engine``) -> its new home.
MOVED = {
    "bootstrap": "inference.bootstrap",
    "checks": "core.identifiability",
    "chunk_encoding": "scaleout.encoding",
    "chunked": "scaleout.chunked",
    "coef_table": "inference.fixed_tests",
    "columns": "frontend.columns",
    "compare": "panel.compare",
    "ddf": "inference.ddf",
    "design": "frontend.design",
    "diagnosis": "core.diagnosis",
    "distributed": "scaleout.dask",
    "estimators": "panel.estimators",
    "fast_design": "frontend.fast_design",
    "formula_dialect": "frontend.formula_dialect",
    "groups": "frontend.groups",
    "hausman": "panel.hausman",
    "kernels": "core.kernels",
    "lazy_imports": "inference.lazy_imports",
    "lme4_path": "core.lme4_path",
    "model": "core.fitting",
    "optimizer": "core.optimizer",
    "parametrization": "core.parametrization",
    "plots": "report.plots",
    "predict": "inference.predict",
    "profile": "report.criterion_curve",
    "r_functions": "frontend.r_functions",
    "r_syntax": "frontend.r_syntax",
    "r_translate": "frontend.r_translate",
    "render": "report.render",
    "results": "core.results",
    "rlrt_kernels": "inference.rlrt_kernels",
    "stats": "core.statistics",
    "type3": "inference.type3",
    "vartest": "inference.variance_tests",
    "within_between": "frontend.transforms",
}

#: Names that left their old module for another home than the module's.
NAME_ROUTES = {
    ("checks", "ModelDataError"): "errors",
    ("checks", "ModelDataWarning"): "errors",
    ("checks", "warn"): "errors",
    ("checks", "check_bool"): "frontend.arguments",
    ("checks", "check_count"): "frontend.arguments",
    ("checks", "check_seed"): "frontend.arguments",
    ("checks", "KERNEL_CHECK_ROWS"): "frontend.data_checks",
    ("checks", "MAX_SUGGESTIONS"): "frontend.data_checks",
    ("checks", "MAGNITUDE_LIMIT"): "frontend.data_checks",
    ("checks", "check_response"): "frontend.data_checks",
    ("checks", "check_range"): "frontend.data_checks",
    ("checks", "check_response_column"): "frontend.data_checks",
    ("checks", "suggest_columns"): "frontend.data_checks",
    ("checks", "check_design_finite"): "frontend.data_checks",
    ("checks", "check_groups"): "frontend.data_checks",
    ("checks", "check_values"): "frontend.data_checks",
    ("chunk_encoding", "merge_group_stats"): "core.statistics",
    ("confint", "ProfileWarning"): "errors",
    ("design", "FORMULAIC_INTERCEPT"): "frontend.formula",
    ("design", "INTERCEPT_NAME"): "frontend.formula",
    ("design", "ParsedFormula"): "frontend.formula",
    ("design", "parse_formula"): "frontend.formula",
    ("design", "NA_ACTIONS"): "frontend.arguments",
    ("lme4_path", "lme4_start_from_rows"): "core.lme4_start",
    ("lme4_path", "lme4_start_from_stats"): "core.lme4_start",
    ("lme4_path", "lme4_start_theta"): "core.lme4_start",
    ("model", "Reread"): "core.statistics",
    ("optimizer", "lme4_default_optimum"): "core.lme4_path",
    ("design", "check_na_action"): "frontend.arguments",
    ("design", "warn"): "errors",
    ("optimizer", "DegenerateCriterionError"): "errors",
}

#: Packages of reml_engine that still import some old paths (owned by another branch
#: at the time of the move); their reads stay silent, so that the warning reaches users.
SILENT_IMPORTERS = ("reml_engine.varcomp",)


def new_home(old: str, name: str) -> str:
    """The module, under ``reml_engine``, that holds ``name`` of old module ``old``."""
    return NAME_ROUTES.get((old, name), MOVED[old])


class MovedModule(types.ModuleType):
    """Stands at an old path; attribute reads go to the new module, with a warning."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        old = self.__name__.split(".", 1)[1]
        home = new_home(old, name)
        value = getattr(importlib.import_module(f"reml_engine.{home}"), name)
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not caller.startswith(SILENT_IMPORTERS):
            warnings.warn(
                f"reml_engine.{old} is now reml_engine.{home}: import {name} from there "
                "(the old path goes in the next release)",
                DeprecationWarning,
                stacklevel=2,
            )
        return value


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED` (on ``sys.meta_path``)."""

    def find_spec(self, fullname: str, path=None, target=None):
        package, _, old = fullname.partition(".")
        if package == "reml_engine" and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec) -> types.ModuleType:
        return MovedModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__.split(".", 1)[1]
        module.__doc__ = f"Moved to reml_engine.{MOVED[old]} (this path goes in the next release)."


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())

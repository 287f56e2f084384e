"""Every exception and warning class reml_engine raises, in one place.

* :class:`ModelDataError` (a ``ValueError``): the data or arguments cannot be fitted as
  given; the message names the column, level or count at fault and what to do.
* :class:`ModelDataWarning`: the fit goes on, but the data were changed (rows or columns
  dropped) or may be a problem (scales far apart); :func:`warn` issues it.
* :class:`DegenerateCriterionError` (a ``ValueError``): the criterion keeps falling as
  var_group / sigma2 grows without bound, so the model is not identified.
* :class:`ProfileWarning`: a profile-likelihood confidence set is not one interval.
"""

from __future__ import annotations

import warnings


class ModelDataError(ValueError):
    """The data cannot be fitted as given; the message says why and what to do."""


class ModelDataWarning(UserWarning):
    """The fit goes on, but the data were changed or may be a problem (rows dropped,
    columns dropped, scales far apart)."""


class DegenerateCriterionError(ValueError):
    """The criterion decreases without bound: the model is not identified."""


class ProfileWarning(UserWarning):
    """The profile is not monotone (the criterion has another local minimum)."""


def warn(message: str) -> None:
    """Issue a :class:`ModelDataWarning` (shown once per call site, as warnings are)."""
    warnings.warn(message, ModelDataWarning, stacklevel=4)


__all__ = ["DegenerateCriterionError", "ModelDataError", "ModelDataWarning", "ProfileWarning", "warn"]

"""Checks on the arguments of the public functions, with messages that name the argument.

A flag, a count or a seed given in the wrong form (``REML="false"``, ``n_sim=0``) is an
error, not a value read by its truthiness or replaced by a default.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import ModelDataError

#: What to do with rows with missing values: drop them (with a warning) or raise.
NA_ACTIONS = ("omit", "raise")


def check_bool(value, name: str) -> bool:
    """A True/False argument: a string such as ``"false"`` or a number is an error, not
    a value read by its truthiness."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ModelDataError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_count(value, name: str, minimum: int = 1) -> int:
    """A whole number of draws, replicates or simulations, at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ModelDataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed, name: str = "seed"):
    """A seed numpy's ``default_rng`` takes: None, a non-negative integer, a
    ``SeedSequence`` or a ``Generator``."""
    if seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)) and seed >= 0:
        return int(seed)
    raise ModelDataError(
        f"{name} must be None, a non-negative integer or a numpy Generator, got {seed!r} ({type(seed).__name__})"
    )


def check_na_action(na_action) -> None:
    """``na_action`` must be one of the two names (lme4's na.omit and na.fail)."""
    if not isinstance(na_action, str) or na_action not in NA_ACTIONS:
        raise ModelDataError(f"na_action must be one of {', '.join(map(repr, NA_ACTIONS))}, got {na_action!r}")

"""Central differences with Richardson extrapolation, for derivatives the engine has in
no closed form (the Satterthwaite df of several-term fits, as lmerTest takes them with
numDeriv).

A central difference with step ``h`` has an error series in ``h^2, h^4, ...``; taking it
at ``h, h/2, h/4, ...`` and eliminating the leading terms one by one (Richardson) leaves
an error of order ``h^(2 levels)``, so a moderate first step (a tenth of the parameter)
gives many correct digits without the rounding error of tiny steps.

Examples
--------
>>> import numpy as np
>>> grad, hess = central_derivatives(lambda x: np.array([x[0] ** 2 * x[1] ** 3]), np.array([1.0, 2.0]))
>>> np.round(grad, 8).tolist(), np.round(hess, 8).tolist()
([[16.0, 12.0]], [[[16.0, 24.0], [24.0, 12.0]]])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: First step, as a fraction of the parameter's size (numDeriv's ``d`` for Hessians).
RELATIVE_STEP = 0.1
#: First step for a parameter whose size is below ``ZERO_TOL`` (numDeriv's ``eps``).
ZERO_STEP = 1e-4
#: Parameters smaller than this in size take ``ZERO_STEP`` (numDeriv's ``zero.tol``).
ZERO_TOL = float(np.sqrt(np.finfo(float).eps / 7e-7))
#: Number of halved steps combined by Richardson extrapolation (numDeriv's ``r``).
RICHARDSON_LEVELS = 4


def first_steps(x: np.ndarray) -> np.ndarray:
    """The first step per parameter: ``RELATIVE_STEP |x|``, or ``ZERO_STEP`` near 0."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < ZERO_TOL, ZERO_STEP, RELATIVE_STEP * np.abs(x))


def richardson(estimates: list[np.ndarray]) -> np.ndarray:
    """Extrapolate estimates at steps ``h, h/2, h/4, ...`` whose error is a series in
    ``h^2`` to step 0."""
    table = [np.asarray(e, dtype=np.float64) for e in estimates]
    order = 1
    while len(table) > 1:
        factor = 4.0**order
        table = [(factor * fine - coarse) / (factor - 1.0) for coarse, fine in zip(table, table[1:], strict=False)]
        order += 1
    return table[0]


def central_jacobian(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """``d fun_i / d x_j`` of a vector-valued ``fun``, shape ``(m, k)``."""
    x = np.asarray(x, dtype=np.float64)
    h0 = first_steps(x)
    columns = []
    for j in range(len(x)):
        levels = []
        for level in range(RICHARDSON_LEVELS):
            h = h0[j] / 2.0**level
            step = np.zeros_like(x)
            step[j] = h
            levels.append((np.asarray(fun(x + step)) - np.asarray(fun(x - step))) / (2.0 * h))
        columns.append(richardson(levels))
    return np.stack(columns, axis=-1)


def central_derivatives(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ``(m, k)`` and Hessian ``(m, k, k)`` of a vector-valued ``fun`` at ``x``.

    The diagonal and the gradient come from ``fun(x -/+ h e_j)``, the mixed derivatives
    from the four points ``x -/+ h_i e_i -/+ h_j e_j``.
    """
    x = np.asarray(x, dtype=np.float64)
    k = len(x)
    h0 = first_steps(x)
    centre = np.asarray(fun(x), dtype=np.float64)
    gradient_levels, hessian_levels = [], []
    for level in range(RICHARDSON_LEVELS):
        h = h0 / 2.0**level
        steps = np.diag(h)
        grad = np.empty((*centre.shape, k))
        hess = np.empty((*centre.shape, k, k))
        for i in range(k):
            up, down = np.asarray(fun(x + steps[i])), np.asarray(fun(x - steps[i]))
            grad[..., i] = (up - down) / (2.0 * h[i])
            hess[..., i, i] = (up - 2.0 * centre + down) / h[i] ** 2
            for j in range(i):
                pp = np.asarray(fun(x + steps[i] + steps[j]))
                pm = np.asarray(fun(x + steps[i] - steps[j]))
                mp = np.asarray(fun(x - steps[i] + steps[j]))
                mm = np.asarray(fun(x - steps[i] - steps[j]))
                hess[..., i, j] = hess[..., j, i] = (pp - pm - mp + mm) / (4.0 * h[i] * h[j])
        gradient_levels.append(grad)
        hessian_levels.append(hess)
    return richardson(gradient_levels), richardson(hessian_levels)


__all__ = ["central_derivatives", "central_jacobian", "richardson"]

"""The thread limits of the engine's calls (reml_engine/varcomp/threads.py): applied inside,
restored after, also when the call raises."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats, threads


def test_limits_apply_inside_and_are_restored():
    before = threads.blas_thread_counts()
    numba_before = numba.get_num_threads()
    with threads.engine_threads():
        if before:
            assert threads.blas_thread_counts() == [threads.ENGINE_BLAS_THREADS] * len(before)
        assert numba.get_num_threads() == 1
    assert threads.blas_thread_counts() == before
    assert numba.get_num_threads() == numba_before
    with pytest.raises(RuntimeError), threads.engine_threads(parallel=True):
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
        raise RuntimeError("inside")
    assert threads.blas_thread_counts() == before
    assert numba.get_num_threads() == numba_before


def test_no_limit_leaves_blas_alone(monkeypatch):
    monkeypatch.setattr(threads, "ENGINE_BLAS_THREADS", None)
    before = threads.blas_thread_counts()
    with threads.engine_threads():
        assert threads.blas_thread_counts() == before


def test_an_evaluation_leaves_the_settings_as_it_found_them():
    rng = np.random.default_rng(3)
    n = 80
    terms = RandomTerms.from_labels({"a": rng.integers(0, 6, n), "b": rng.integers(0, 5, n)})
    problem = VCProblem(compute_vc_stats(np.ones((n, 1)), rng.normal(size=n), terms))
    before = threads.blas_thread_counts()
    numba_before = numba.get_num_threads()
    problem.evaluate([0.5, 1.0])
    problem.reduce_to_term(0, [0.5, 1.0])
    assert threads.blas_thread_counts() == before
    assert numba.get_num_threads() == numba_before

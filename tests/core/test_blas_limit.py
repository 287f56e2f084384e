"""single_threaded_blas from concurrent threads: the limit is process-wide, so blocks that
overlap in time must leave OpenBLAS at the count it had before the first one entered."""

from __future__ import annotations

import threading

import pytest

from reml_engine.core import blas


@pytest.fixture
def two_threads():
    controls = blas.openblas_controls()
    if not controls or blas.SCAN_BLAS_THREADS is None:
        pytest.skip("no OpenBLAS thread control in this process")
    before = [int(get()) for _, get in controls]
    for setter, _ in controls:
        setter(2)  # a count above the limit, so a wrong restore shows
    yield controls
    for (setter, _), count in zip(controls, before, strict=True):
        setter(count)


def test_overlapping_blocks_restore_the_count_the_first_found(two_threads):
    """Thread A enters, thread B enters, A leaves, B leaves: B must not restore the limit
    it found when it entered (the count A had set)."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside = []

    def a():
        with blas.single_threaded_blas():
            inside.append([int(get()) for _, get in two_threads])
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with blas.single_threaded_blas():
            b_in.set()
            a_out.wait(10)
            inside.append([int(get()) for _, get in two_threads])  # A has left, B still inside

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert inside == [[blas.SCAN_BLAS_THREADS] * len(two_threads)] * 2
    assert [int(get()) for _, get in two_threads] == [2] * len(two_threads)


def test_nested_blocks_in_one_thread(two_threads):
    with blas.single_threaded_blas():
        with blas.single_threaded_blas():
            pass
        assert [int(get()) for _, get in two_threads] == [blas.SCAN_BLAS_THREADS] * len(two_threads)
    assert [int(get()) for _, get in two_threads] == [2] * len(two_threads)

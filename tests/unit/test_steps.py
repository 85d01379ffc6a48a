"""The window-step functions (jvm/ Steps: STEP_MAX, STEP_RMS), called directly in the JVM of a
Flink table environment, against tests.reference.steps: steps across missing samples (more than
the sampling interval apart), the figure in and out of time order,
over many more samples than an accumulator buffers, and across merged accumulators; and the
cases that the bounded state leaves out, by value, with the count of samples left out that the
functions keep as an operator metric."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from tests import reference


@dataclass(frozen=True)
class Functions:
    """STEP_MAX and STEP_RMS of one kind (stream or batch), instances in the JVM."""

    gateway: object
    largest: object
    rms: object
    counted: int  # the counter's value when they were opened


@pytest.fixture(scope="module")
def gateway(base_settings):
    from pyflink.java_gateway import get_gateway

    from common.flink_env import create_table_env

    create_table_env(base_settings, streaming=False)  # puts the project's jar on the class path
    return get_gateway()


def load(gateway, name: str):
    loader = gateway.jvm.Thread.currentThread().getContextClassLoader()
    return gateway.jvm.Class.forName(name, True, loader)


def functions(gateway, kind: int) -> Functions:
    """The functions the stream (kind 0) or batch (1) table environments register, opened
    as an operator opens them (here with no operator: every instance of a kind shares one
    counter, which is not reported)."""
    from common.flink_env import JAVA_FUNCTIONS

    largest, rms = (
        load(gateway, JAVA_FUNCTIONS[n][kind]).newInstance() for n in ("STEP_MAX", "STEP_RMS")
    )
    context = gateway.jvm.org.apache.flink.table.functions.FunctionContext(None)
    largest.open(context)
    rms.open(context)
    return Functions(gateway, largest, rms, largest.samplesLeftOut())


@pytest.fixture
def jvm(gateway):
    """Instances opened for each test, which counts the samples left out from then on."""
    return functions(gateway, 0)


def left_out(jvm: Functions) -> int:
    """The samples the accumulating function (STEP_MAX) left out since it was opened."""
    return jvm.largest.samplesLeftOut() - jvm.counted


@pytest.fixture(scope="module")
def buffer(gateway):
    return load(gateway, "local.anomaly.flink.Steps").getField("BUFFER").getInt(None)


# The sampling interval the functions are given here (ms): series() samples a second apart.
INTERVAL = 1000


def accumulate(jvm: Functions, times, values, interval: int | None = INTERVAL):
    """An accumulator fed these samples in this order, with this sampling interval."""
    acc = jvm.largest.createAccumulator()
    long = jvm.gateway.jvm.java.lang.Long
    every = None if interval is None else long(interval)
    for t, v in zip(times, values, strict=True):
        jvm.largest.accumulate(acc, long(int(t)), float(v), every)
    return acc


def merged(jvm: Functions, accs):
    """The first accumulator with the others merged into it, in this order."""
    others = jvm.gateway.jvm.java.util.ArrayList()
    for acc in accs[1:]:
        others.add(acc)
    jvm.largest.merge(accs[0], others)
    return accs[0]


def figures(jvm: Functions, acc) -> tuple[float | None, float | None]:
    return jvm.largest.getValue(acc), jvm.rms.getValue(acc)


def expected(times, values) -> tuple[float, float]:
    d = reference.steps(times, values, INTERVAL)
    return d.max(), float(np.sqrt(np.mean(d * d)))


def series(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n samples a second apart, a random walk with a few samples sharing a time (their
    neighbour's, two seconds after the one before: a step across two intervals)."""
    rng = np.random.default_rng(seed)
    times = np.arange(n, dtype=np.int64) * 1000
    times[rng.choice(n, n // 20, replace=False)] += 1000  # some land on the next one's time
    return times, np.cumsum(rng.normal(0, 1, n)) + rng.normal(0, 5, n) * (rng.random(n) < 0.01)


def assert_figures(jvm, acc, times, values) -> None:
    got = figures(jvm, acc)
    np.testing.assert_allclose(got, expected(times, values), rtol=1e-12)


def test_fewer_than_two_samples_have_no_steps(jvm):
    assert figures(jvm, accumulate(jvm, [], [])) == (None, None)
    assert figures(jvm, accumulate(jvm, [5], [1.0])) == (None, None)
    # Two samples of one time: ordered by value, one step between them.
    assert figures(jvm, accumulate(jvm, [5, 5], [4.0, 1.0])) == (3.0, 3.0)


def test_a_step_across_missing_samples_counts_over_the_root_of_the_intervals(jvm):
    """Samples at 0, 1 and 4 s (two missing) and one 0.5 s after: the step across 3 intervals
    counts at its size over sqrt(3), the one nearer than an interval at its size; without an
    interval every step counts at its size. Across merged accumulators alike, also one that
    was given no sample (and so no interval)."""
    times, values = [0, 1000, 4000, 4500], [0.0, 1.0, 4.0, 3.5]
    want = (np.sqrt(3.0), np.sqrt((1 + 3 + 0.25) / 3))
    np.testing.assert_allclose(figures(jvm, accumulate(jvm, times, values)), want, rtol=1e-12)
    np.testing.assert_allclose(expected(times, values), want, rtol=1e-12)
    raw = figures(jvm, accumulate(jvm, times, values, interval=None))
    np.testing.assert_allclose(raw, (3.0, np.sqrt((1 + 9 + 0.25) / 3)), rtol=1e-12)
    for order in ([0, 1], [1, 0]):
        parts = [accumulate(jvm, times[:2], values[:2]), accumulate(jvm, times[2:], values[2:])]
        accs = [jvm.largest.createAccumulator(), *(parts[i] for i in order)]
        np.testing.assert_allclose(figures(jvm, merged(jvm, accs)), want, rtol=1e-12)
    assert left_out(jvm) == 0


@pytest.mark.parametrize("n", [3, 255, 256, 257, 2000])
def test_in_time_order_the_figure_is_exact(jvm, n):
    times, values = series(n, seed=n)
    assert_figures(jvm, accumulate(jvm, times, values), times, values)
    assert left_out(jvm) == 0


def test_out_of_order_within_the_buffer_the_figure_is_exact(jvm, buffer):
    """Samples shuffled within runs of 100 (fewer than half the buffer), over 8 buffers."""
    times, values = series(8 * buffer, seed=1)
    rng = np.random.default_rng(2)
    order = np.concatenate(
        [rng.permutation(np.arange(i, min(i + 100, len(times)))) for i in range(0, len(times), 100)]
    )
    assert_figures(jvm, accumulate(jvm, times[order], values[order]), times, values)
    assert left_out(jvm) == 0


def test_a_sample_later_than_the_folded_ones_is_left_out_of_the_steps(jvm, buffer):
    """A window's earliest sample that comes in after a full buffer was folded cannot be
    placed: the figure is that of the other samples. Coming in before that, it is placed."""
    times, values = series(2 * buffer, seed=3)
    times, values = times + 1000, values.copy()
    values[-1] = 100.0  # a spike, at a time before every other sample
    times[-1] = 0
    late = accumulate(jvm, times, values)
    assert_figures(jvm, late, times[:-1], values[:-1])
    assert left_out(jvm) == 1
    early = np.r_[np.arange(100), len(times) - 1, np.arange(100, len(times) - 1)]
    placed = accumulate(jvm, times[early], values[early])
    assert_figures(jvm, placed, times, values)
    assert figures(jvm, placed)[0] >= 90.0
    assert left_out(jvm) == 1  # the late one only


@pytest.mark.parametrize("reverse", [False, True])
def test_merged_accumulators_in_time_order_give_the_exact_figure(jvm, buffer, reverse):
    """Accumulators of consecutive stretches of a window, each over several buffers (folded)
    or a few samples, merged into the earliest or into the latest."""
    times, values = series(6 * buffer + 40, seed=4)
    cuts = [0, 3 * buffer, 3 * buffer + 20, 6 * buffer, len(times)]
    accs = [accumulate(jvm, times[a:b], values[a:b]) for a, b in itertools.pairwise(cuts)]
    if reverse:
        accs = accs[::-1]
    assert_figures(jvm, merged(jvm, accs), times, values)
    assert left_out(jvm) == 0


def test_merged_accumulators_of_fewer_samples_than_the_buffer_give_the_exact_figure(jvm, buffer):
    """Samples in random order across seven accumulators, fewer in all than a buffer."""
    times, values = series(buffer - 1, seed=5)
    rng = np.random.default_rng(6)
    parts = np.array_split(rng.permutation(len(times)), 7)
    accs = [accumulate(jvm, times[p], values[p]) for p in parts]
    assert_figures(jvm, merged(jvm, accs), times, values)
    assert left_out(jvm) == 0


def test_merged_overlapping_summaries_keep_the_first_and_the_others_buffer(jvm, buffer):
    """Two accumulators that each folded samples of the same stretch of time: the second's
    folded samples are left out, its buffered ones placed."""
    times, values = series(4 * buffer, seed=7)
    even, odd = np.arange(0, len(times), 2), np.arange(1, len(times), 2)
    first, second = (
        accumulate(jvm, times[even], values[even]),
        accumulate(jvm, times[odd], values[odd]),
    )
    # Each holds 2 * buffer samples: folded in three halves of a buffer, one half buffered.
    kept_odd = odd[-(buffer // 2) :]
    kept = np.sort(np.r_[even, kept_odd])
    assert_figures(jvm, merged(jvm, [first, second]), times[kept], values[kept])
    assert left_out(jvm) == len(odd) - len(kept_odd)


def test_the_batch_functions_keep_every_sample(gateway, buffer):
    """History read by a batch table environment comes in any order: its functions place
    every sample, here 8 buffers' worth shuffled, and merged in any order."""
    batch = functions(gateway, 1)
    times, values = series(8 * buffer, seed=8)
    order = np.random.default_rng(9).permutation(len(times))
    assert_figures(batch, accumulate(batch, times[order], values[order]), times, values)
    parts = np.array_split(order, 5)
    accs = [accumulate(batch, times[p], values[p]) for p in parts]
    assert_figures(batch, merged(batch, accs), times, values)
    assert left_out(batch) == 0

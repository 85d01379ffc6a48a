"""What turns model input and output into something comparable across devices and models:
per-device normalisation of the features going in, and a severity 0-100 for the score coming
out. Both are fitted at training time, stored in the model card, and applied by the scoring
UDF exactly as training applied them (pure numpy; no scikit-learn at scoring time).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist

import numpy as np

from common.settings import duration_seconds

# A device's scale for a feature is its own standard deviation over the training windows, but
# at least a floor, so that a device that was flat in training does not turn every later wobble
# into an alarm: SCALE_FLOOR_SHARE_OF_FLEET x the spread the fleet's devices typically have.
# That is the fleet's median sd, unless the feature holds mixed units: its devices' levels
# (|mean|, 10th to 90th percentile) span more than MIXED_UNITS_SPAN (one catalogue metric
# holding bytes on one device and a load average of ~0.1 on another, as an onboarded folder of
# one-metric series does). There the floor is the fleet's median coefficient of variation
# (sd / |mean|) x the device's own |mean|, when smaller: a quiet device is not floored by the
# devices in the millions, which would keep it from ever alarming. And at least
# SCALE_FLOOR_RELATIVE of the device's own mean magnitude (at least 1): a feature constant over
# the whole fleet (an interface that was always up) then scores any change as far out.
SCALE_FLOOR_SHARE_OF_FLEET = 0.1
SCALE_FLOOR_RELATIVE = 1e-6
MIXED_UNITS_SPAN = 100.0
# In a one-metric catalogue, a feature that is exactly 0 in at least ZERO_INFLATED_SHARE of a
# device's training windows (an error counter at rest, a window that did not move) is scaled by
# the typical size of its non-zero values (their root mean square) when that is larger: its sd
# over all windows, mostly zeros, is a fraction of the size its occasional values have, and
# each of them read as far out. Their size, not their spread about their own mean: values that
# recur alike (a counter's single errors, all 1) have no spread, and read against the sd of
# mostly zeros each was 5 sd out (on 14-day pieces of the KPIs at 5 min, two series of one KPI
# were alarmed on 5.8 and 7.8 % of their normal time by such windows). On the AIOps KPIs at one
# minute an error counter's single errors, which its labels call normal, were 162 of the 521
# false-alarm episodes, and 14 of the fleet's 60 highest-scoring training windows were its
# (README, Accuracy). Not where many metrics share one model: in the demo's
# network catalogue it halved the threshold, and a stream's first window after a restart (one
# sample per device, every spread 0) then flagged on all 100 devices instead of 4.
ZERO_INFLATED_SHARE = 0.5
# ... and non-zero in at least this share of them: values that recur are the device's normal
# behaviour; a few non-zero windows in hundreds may be incidents, and scaled by their own size a
# later one would not stand out (on SMD, where a metric at 0 that moves is often the
# anomaly, two servers fell silent without this bar).
ZERO_INFLATED_RECURRING = 0.01

# A window holding under PARTIAL_SHARE of the samples its device's training windows usually
# held (the window a device starts sending in, or comes back in after a gap, or a stream's
# first after a restart) is judged on its level: PartialWindows.
PARTIAL_SHARE = 0.5


# Severity knots: the score at these training quantiles maps to these severities; the
# threshold maps to SEVERITY_AT_THRESHOLD; above it severity approaches 100 exponentially.
SEVERITY_KNOTS = ((0.5, 0.0), (0.9, 10.0), (0.99, 25.0))
SEVERITY_AT_THRESHOLD = 50.0


class CalibrationError(ValueError):
    """Normalisation or calibration cannot be fitted on this data, or a card's copy is broken."""


def scale_floor(center: np.ndarray, sd: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The scale floor (see SCALE_FLOOR_SHARE_OF_FLEET) at ``level`` ([rows, features]) of a
    fleet whose devices have these training ``center`` and ``sd`` ([devices, features])."""
    magnitude = np.abs(level)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.abs(sd / center)
    cv[~np.isfinite(cv)] = np.nan
    typical_cv = np.zeros(center.shape[1])
    seen = np.isfinite(cv).any(axis=0)
    typical_cv[seen] = np.nanmedian(cv[:, seen], axis=0)
    by_sd = np.median(sd, axis=0)
    low, high = np.quantile(np.abs(center), [0.1, 0.9], axis=0)
    mixed = high > MIXED_UNITS_SPAN * low
    by_level = np.where(mixed & (magnitude > 0), typical_cv * magnitude, by_sd)
    return np.maximum(
        SCALE_FLOOR_SHARE_OF_FLEET * np.minimum(by_sd, by_level),
        SCALE_FLOOR_RELATIVE * np.maximum(magnitude, 1.0),
    )


def _non_zero_size(inverse: np.ndarray, x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per device (``inverse``: each row's device) and feature, the root mean square of the
    non-zero values (their typical size, away from the zeros) where at least
    ZERO_INFLATED_SHARE of the device's values are 0 and at least two, and
    ZERO_INFLATED_RECURRING of them, are not; else 0."""
    devices = len(counts)
    non_zero = (x != 0).astype(np.float64)
    n = np.zeros((devices, x.shape[1]))
    np.add.at(n, inverse, non_zero)
    sq = np.zeros_like(n)
    np.add.at(sq, inverse, non_zero * x**2)
    size = np.sqrt(np.divide(sq, n, out=np.zeros_like(n), where=n > 0))
    windows = counts[:, None]
    inflated = (windows - n >= ZERO_INFLATED_SHARE * windows) & (n >= 2)
    inflated &= n >= ZERO_INFLATED_RECURRING * windows
    return np.where(inflated, size, 0.0)


@dataclass(frozen=True)
class DeviceNormaliser:
    """z = (x - center[device]) / scale[device]; devices not seen in training get the fleet's
    center and scale (pooled over all training windows)."""

    devices: tuple[str, ...]
    center: np.ndarray  # [devices, features]
    scale: np.ndarray  # [devices, features]
    fleet_center: np.ndarray  # [features]
    fleet_scale: np.ndarray  # [features]

    @classmethod
    def fit(
        cls, device_ids: np.ndarray, x: np.ndarray, *, zero_inflated: bool = False
    ) -> DeviceNormaliser:
        """``zero_inflated``: scale mostly-zero features by their non-zero values
        (ZERO_INFLATED_SHARE); training sets it for one-metric catalogues only."""
        x = np.asarray(x, dtype=np.float64)
        device_ids = np.asarray(device_ids, dtype=object)
        if len(x) == 0:
            raise CalibrationError("no training windows to normalise")
        devices, inverse = np.unique(device_ids.astype(str), return_inverse=True)
        counts = np.bincount(inverse, minlength=len(devices)).astype(np.float64)
        center = np.zeros((len(devices), x.shape[1]))
        np.add.at(center, inverse, x)
        center /= counts[:, None]
        sq = np.zeros_like(center)
        np.add.at(sq, inverse, (x - center[inverse]) ** 2)
        sd = np.sqrt(sq / counts[:, None])
        if zero_inflated:
            sd = np.fmax(sd, _non_zero_size(inverse, x, counts))
        fleet_center = x.mean(axis=0)
        fleet_sd = x.std(axis=0)
        # The devices' floors and the fleet's, from one pass over the fleet's statistics.
        floors = scale_floor(center, sd, np.vstack([center, fleet_center]))
        floor, fleet_floor = floors[:-1], floors[-1]
        return cls(
            tuple(devices.tolist()),
            center,
            np.maximum(sd, floor),
            fleet_center,
            np.maximum(fleet_sd, fleet_floor),
        )

    def transform(self, device_ids, x: np.ndarray) -> np.ndarray:
        """Normalised features (unknown devices: by the fleet's center and scale)."""
        return self.transform_rows(self.indices(device_ids), x)

    def transform_rows(self, indices: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``transform`` for device indices already looked up with ``indices``."""
        center, scale = self.typical_rows(indices)
        return (np.asarray(x, dtype=np.float64) - center) / scale

    def typical_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(center, scale) of each device index (-1: the fleet's): its typical values."""
        center, scale = self._with_fleet_row
        return center[indices], scale[indices]

    def known(self, device_ids) -> np.ndarray:
        return self.indices(device_ids) >= 0

    def indices(self, device_ids) -> np.ndarray:
        """Each device's row in ``center``/``scale``; -1 (the fleet row) for unknown ones."""
        return self._device_index.get_indexer(np.asarray(device_ids, dtype=object))

    @cached_property
    def _device_index(self):
        import pandas as pd

        return pd.Index(self.devices, dtype=object)

    @cached_property
    def _with_fleet_row(self) -> tuple[np.ndarray, np.ndarray]:
        """center and scale with the fleet's appended, so that index -1 selects the fleet."""
        return (
            np.vstack([self.center, self.fleet_center]),
            np.vstack([self.scale, self.fleet_scale]),
        )

    def to_card(self) -> dict:
        return {
            "method": "per-device standard score",
            "scale_floor": (
                f"max(device sd, {SCALE_FLOOR_SHARE_OF_FLEET} x fleet median sd (mixed units, "
                f"levels spanning over {MIXED_UNITS_SPAN:g}x: at most fleet median sd/|mean| x "
                f"|mean|), {SCALE_FLOOR_RELATIVE} x max(1, |mean|))"
            ),
            "unknown_device": "fleet center and scale",
            "fleet": {"center": self.fleet_center.tolist(), "scale": self.fleet_scale.tolist()},
            "devices": {
                d: {"center": c.tolist(), "scale": s.tolist()}
                for d, c, s in zip(self.devices, self.center, self.scale, strict=True)
            },
        }

    @classmethod
    def from_card(cls, card: dict, n_features: int) -> DeviceNormaliser:
        try:
            devices = card["devices"]
            fleet = card["fleet"]
            names = tuple(devices)
            center = np.array([devices[d]["center"] for d in names], dtype=np.float64)
            scale = np.array([devices[d]["scale"] for d in names], dtype=np.float64)
            fleet_center = np.array(fleet["center"], dtype=np.float64)
            fleet_scale = np.array(fleet["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"normalisation in the model card is malformed: {exc}") from exc
        center = center.reshape(len(names), -1) if names else np.zeros((0, n_features))
        scale = scale.reshape(len(names), -1) if names else np.zeros((0, n_features))
        for name, a in (("center", center), ("scale", scale)):
            if a.shape[1] != n_features:
                raise CalibrationError(
                    f"normalisation {name} has {a.shape[1]} features, the model {n_features}"
                )
        if fleet_center.shape != (n_features,) or fleet_scale.shape != (n_features,):
            raise CalibrationError("fleet normalisation does not match the model's features")
        if not (np.all(scale > 0) and np.all(fleet_scale > 0)):
            raise CalibrationError("normalisation scales must be positive")
        return cls(names, center, scale, fleet_center, fleet_scale)


# The window aggregates a context check re-reads against the recent context: levels (minus
# the context's level) and spreads (as they are), each over the context's spread.
CONTEXT_LEVELS = ("mean", "min", "max")
CONTEXT_SPREADS = ("std",)
# The spread reading of a context check (one-metric catalogues: common.features.SPREAD_STATS):
# how far a window's std is from the std of the device's recent windows, in their own spread,
# |std - stdavg| / stdsd over the longest horizon. A window SPREAD_Z out is flagged whatever
# the model's score: a change in how much a series varies, as a failing disk's latency or a
# stuck counter shows it, rather than in its level. Read only once the horizon holds enough
# of the device's windows (the card's spread_min_windows: a quarter of the horizon's). Measured
# (README, Accuracy): on one-metric public server metrics it finds events the model's own
# threshold, lowered, does not.
SPREAD_Z = 10.0
# A flat window (min = max: a stuck gauge, a frozen exporter repeating its last value) is read
# with a lower bar: FLAT_Z of the device's recent spreads below their mean, i.e. where its
# windows' std has sat more than FLAT_Z of its own spread above 0. The std of n samples of
# noise has mean/sd of about 1.9 for n = 3, 2.8 for n = 5 and 4.7 for n = 12 (chi
# distribution), so this holds for a device whose windows hold 4 or more samples that vary; a
# device whose windows are sometimes flat anyway (a quantised idle metric, one sample per
# window) sits below it and is not read.
FLAT_Z = 2.0
# The seasonal readings (one-metric catalogues with SEASON_STATS, common.features): a window
# whose mean's de-biased residual against the same time of the week on the previous weeks, or
# of the day on the previous days (common.features.SEASONS), is SEASON_Z of its recent spread
# out is flagged whatever the model's score. Measured (README, Accuracy): they find the spikes
# a daily swing hides.
SEASON_Z = 5.0
# Where the scorer is given the window's sample count, the seasonal readings flag windows of at
# most SEASON_MAX_SAMPLES samples: those the spike reading cannot read. A window of several
# samples shows a spike in its own samples (the spike reading, the window's shape); against its
# time of the day its mean added few events and many false alarms (README, Accuracy). Slow
# series, one sample per window, keep the reading that finds their spikes within a daily swing.
SEASON_MAX_SAMPLES = 3
# The level reading (one-metric catalogues: the context holds each device's window count): a
# window whose mean is LEVEL_Z of the device's recent spread of window means from their level,
# |mean - avg| / max(sd, the device's training scale of its mean) over the longest horizon, is
# flagged whatever the model's score. It is the baselines' windowed Gaussian, read per window
# from the context the job keeps anyway, beside the model's two readings that must both pass:
# a spike that the training normalisation calls ordinary (a series whose level grew, a quiet
# stretch after a busy training part) is still far out of the device's recent windows. Read
# once the horizon holds spread_min_windows of the device's windows, as the spread reading is.
# Measured (README, Accuracy): on public labelled web-traffic series it finds the spikes the
# model's AND misses.
LEVEL_Z = 4.0
# Where the scorer is given the window's sample count, a window of more than SEASON_MAX_SAMPLES
# samples is read by the level reading at the higher bar LEVEL_MANY_Z. The spread, spike and
# step readings and the window's shape read such a window's own samples; its mean alone, read at
# LEVEL_Z, flagged level shifts the model's readings had let pass (README, Accuracy: on the
# public servers' metrics at 5 minutes, most of its false alarms were the level reading's alone
# against one event). Slow series, one sample per window, keep LEVEL_Z.
LEVEL_MANY_Z = 5.0
# The stuck reading (one-metric catalogues with two horizons: the context holds the shortest
# horizon's level, spread and window count): a window whose mean equals the shortest horizon's level
# (within STUCK_SHARE of the longest horizon's spread of window means) with that horizon's spread
# and the window's own std within STUCK_SHARE of the longest's, i.e. a value that has not moved over
# the recent windows where the device's windows otherwise vary (a quiet device's window means, each
# over many samples that do move, vary little too; their std tells them apart), is flagged whatever
# the model's score, once the recent horizon holds more than stuck_min_windows windows (half of its
# windows). A stuck sensor or a frozen exporter in windows of one sample each, which the flat
# reading (min = max within a window) cannot see. Read only for the devices whose training window
# means repeated the one before in under STUCK_REPEATS of their windows: a quantised metric, or one
# that rests at 0, repeats normally. Its reading is the recent windows over stuck_min_windows.
# Measured (README, Accuracy): on the ops simulator's hourly series it finds the stuck values the
# model misses.
STUCK_SHARE = 1e-3
STUCK_REPEATS = 0.01
# The spike reading (one-metric catalogues: the scorer is given the window's sample count): a
# window's most extreme sample (its min or max) against the window's other samples, |e - m'| /
# max(s', SPIKE_FLOOR x the device's recent window spread), where m' and s' are the mean and
# population spread of the other samples (from the window's count, mean, std and e: the sample
# taken out). One sample far from the rest of its window, a 5-minute dip in an hour of steady
# traffic, moves the window's mean and std little, and against the window's own std (the
# window's shape) an outlier of any size in 12 samples reads at most sqrt(11). Read for windows
# of SPIKE_MIN_SAMPLES or more, and flagged at each device's own bar: the larger of SPIKE_Z and
# SPIKE_MARGIN x the device's highest reading over its training windows (a device whose windows
# hold single odd samples anyway is read at its own level; one none of whose training windows
# could be read is not read). The floor keeps a window of otherwise equal samples from reading
# infinitely far; where no recent spread is known (a fresh stream's first window) it is half the
# device's typical window std (its training windows'; the card's spike_typical_floor), and
# without one (all 0) such a window is not read.
# Measured (README, Accuracy): on public 5-minute KPIs it finds the one-sample dips and spikes
# the window's features miss.
SPIKE_Z = 6.0
SPIKE_MARGIN = 1.5
SPIKE_FLOOR = 0.5
SPIKE_MIN_SAMPLES = 4
# A window of fewer samples reads further out by chance: its other samples' spread comes from
# fewer of them, and the floor from a smaller usual window spread. So a window of fewer than
# SPIKE_FULL_SAMPLES samples has its spike reading scaled to one of SPIKE_FULL_SAMPLES (the
# bars were chosen on 5-minute samples in 1 h windows): by the ratio of the two counts'
# 1 - STEP_TAIL quantiles of the reading of normal samples whose usual window spread is the
# steady one of their count (_SPIKE_SCALE, index: count; spike_scale_quantiles computes them).
# A device whose agent sends half as often reads its windows of 6 samples at 0.80 of
# themselves, not against bars of windows of 12. Measured (README, Accuracy).
SPIKE_FULL_SAMPLES = 12
# The step reading (one-metric catalogues: the scorer is given the window's largest step and
# the device's recent windows' root mean square step, common.features.STEP_AGGREGATES and
# STEP_STATS): the largest difference between consecutive samples of the window (one across
# missing samples over the root of the intervals it spans) over the recent windows' usual
# step, step / stepavg. A series that moves smoothly or by small steps makes small steps; a
# dip or a jump of a few samples makes one far larger, where the window's mean, spread and
# extremes, which a trend within the window moves too, hide it. Read for
# windows of STEP_MIN_SAMPLES or more, where the usual step is above 0, and flagged at each
# device's own bar: the larger of STEP_Z and STEP_MARGIN x the device's highest reading over
# its training windows (as the spike reading's). A window of two samples has one step: at
# 30-minute samples in 1 h windows (onboarding's proposal) it is the window's only reading of
# how its samples move, which the spike reading (SPIKE_MIN_SAMPLES) cannot read. Measured
# (README, Accuracy).
STEP_Z = 8.0
STEP_MARGIN = 1.5
STEP_MIN_SAMPLES = 2
# The step and change readings read a window against its device's usual step or change over the
# longest horizon once that horizon holds USUAL_MIN_WINDOWS of the device's windows (the card's
# usual_min_windows). A usual step of a window or two is no usual step: a fresh stream whose
# first window held two samples (one step) read its second window's steps against that one
# step, and 30 of 154 two-week KPI pieces were flagged there (27 by the step reading), 7 with
# this wait; the same readings in a training part's first windows raised each device's bar.
# Measured (README, Accuracy).
USUAL_MIN_WINDOWS = 6
# A window's largest step is the largest of its count - 1: of fewer steps, the largest is
# smaller for the same usual step, so the bars (chosen on windows of STEP_FULL_SAMPLES: 5-minute
# samples in 1 h windows) would read a window of few samples as if it held STEP_FULL_SAMPLES.
# So a window of fewer samples has its reading scaled up to theirs: by q(STEP_FULL_SAMPLES - 1)
# / q(count - 1), where q(k) is the size that the largest of k normal steps passes once in
# 1 / STEP_TAIL windows (the normal quantile 1 - STEP_TAIL / 2k): 1.19 for a window of 2
# samples (one step), 1.05 for 6, 1 for 12 or more. Measured (README, Accuracy).
STEP_FULL_SAMPLES = 12
STEP_TAIL = 1e-3
# The spike-and-step reading: a window that both the spike and the step reading read at
# SPIKE_STEP_SHARE of their bars or more (a sample off the rest of its window, reached by a
# step far above the usual ones) is flagged: two readings of the window's samples short of
# their bars together. Measured (README, Accuracy): the lowest share that held kpi14's 0.10
# false alarms a day (chosen on its labels).
SPIKE_STEP_SHARE = 0.72
# The change reading (one-metric catalogues: the scorer is given each window's change, the size
# of the difference between its mean and the device's window just before, and the device's
# recent windows' root mean square change, common.features.CHANGE_STATS and
# CHANGE_CONTEXT_STATS): change / changerms, for a window of at most CHANGE_MAX_SAMPLES samples,
# flagged at each device's own bar: the larger of CHANGE_Z and CHANGE_MARGIN x the device's
# highest reading over its training windows (as the spike and step readings' bars). A window
# of one sample (a slow series: a sample an hour in 1 h windows) has no step or spike of its
# own; how far it moved from the window before is its reading of a jump, where its level
# against the recent windows' spread (the level reading) stays within a series that wanders.
# CHANGE_Z is the level reading's LEVEL_Z: the same bar for one value against its recent
# spread. Measured (README, Accuracy): on public hourly series (the AIOps KPIs at 1 h, Yahoo
# A1, the simulator's hourly fleet) it finds jumps the other readings miss. A window of more
# samples reads its own steps instead (on 30-minute samples, two a window, its change added
# fewer events than every bar lowered together, at fewer false alarms).
CHANGE_Z = 4.0
CHANGE_MARGIN = 1.0
CHANGE_MAX_SAMPLES = 1
# The ContextCheck fields of the readings that flag a window on its own (the spike-and-step
# reading reads the spike and step ones): empty, a reading is not read.
READING_FIELDS = ("spread", "season", "level", "stuck", "spike", "step", "change")
# A context column: <metric>_<statistic><horizon> ("value_avg6h").
_CONTEXT_COLUMN = re.compile(r"(.+)_([a-z]+)([1-9][0-9]*[smhd])")


def context_columns(context_names) -> dict[tuple[str, str, int], int]:
    """Each context column's index by (metric, statistic, horizon seconds)."""
    out = {}
    for c, name in enumerate(context_names):
        if match := _CONTEXT_COLUMN.fullmatch(name):
            out[(match.group(1), match.group(2), duration_seconds(match.group(3)))] = c
    return out


def steady_devices(device_ids: np.ndarray, values: np.ndarray) -> tuple[str, ...]:
    """The devices whose window values (rows in time order per device, as every training input
    gives them) repeat the one before in under STUCK_REPEATS of their windows: where the stuck
    reading is read."""
    ids = np.asarray(device_ids).astype(str)
    values = np.asarray(values, dtype=np.float64)
    devices, inverse = np.unique(ids, return_inverse=True)
    repeats = np.zeros(len(devices))
    again = (ids[1:] == ids[:-1]) & (values[1:] == values[:-1])
    np.add.at(repeats, inverse[1:], again)
    windows = np.bincount(inverse, minlength=len(devices))
    return tuple(devices[repeats < STUCK_REPEATS * windows].tolist())


def spike_z(
    x: np.ndarray,
    context: np.ndarray,
    spike: tuple[int, int, int, int, int, int],
    scaled: bool = False,
    typical_std: np.ndarray | None = None,
) -> np.ndarray:
    """The spike reading's statistic of each window (see SPIKE_Z) for one metric's ``spike``
    indices (mean, std, min and max features; count and stdavg context columns): NaN where it
    cannot be read (fewer than SPIKE_MIN_SAMPLES samples, no floor and other samples that sat
    still). Where ``scaled``, a window of fewer than SPIKE_FULL_SAMPLES samples is scaled to
    one of them (spike_scale; False: not scaled, a card from before it). ``typical_std``: each
    window's device's typical window std, the floor's spread where no recent one is known (a
    fresh stream's first window; None: no floor there, a card from before it)."""
    jm, js, lo, hi, n, a = spike
    count = context[:, n]
    mean, std = x[:, jm], x[:, js]
    usual = context[:, a]
    if typical_std is not None:
        usual = np.where(np.isfinite(usual), usual, typical_std)
    floor = SPIKE_FLOOR * np.where(np.isfinite(usual), usual, 0.0)
    others = np.fmax(count - 1.0, 1.0)
    out = np.zeros(len(x))
    for extreme in (x[:, lo], x[:, hi]):
        d = extreme - mean
        # Taking sample e out of n: the others' mean is m - d/(n-1), their sum of squared
        # deviations n s^2 - d^2 n/(n-1) (removal in Welford's form, no cancellation).
        ss = np.fmax(count * std * std - d * d * count / others, 0.0)
        den = np.fmax(np.sqrt(ss / others), floor)
        # An extreme that is the window's mean reads 0; one off it with nothing to bound it
        # (other samples that sat still, no floor) cannot be read: NaN for the window.
        z = np.where(d == 0, 0.0, np.nan)
        np.divide(np.abs(d) * count / others, den, out=z, where=den > 0)
        out = np.maximum(out, z)
    if scaled:
        out = out * spike_scale(count)
    return np.where(count >= SPIKE_MIN_SAMPLES, out, np.nan)


# The scale of a window's spike reading by its count (index: count, up to SPIKE_FULL_SAMPLES's
# 1; spike_scale_quantiles with 10**6 windows a count, its default, gives them to about 0.5 %).
_SPIKE_SCALE = np.array(
    [np.nan] * SPIKE_MIN_SAMPLES + [0.673, 0.750, 0.805, 0.844, 0.882, 0.911, 0.943, 0.974, 1.0]
)


def spike_scale(count: np.ndarray) -> np.ndarray:
    """The scale of the spike reading of windows of ``count`` samples (see
    SPIKE_FULL_SAMPLES): 1 for SPIKE_FULL_SAMPLES or more, NaN for fewer than
    SPIKE_MIN_SAMPLES or a count not known."""
    count = np.asarray(count, dtype=np.float64)
    known = np.isfinite(count) & (count >= SPIKE_MIN_SAMPLES)
    at = np.where(known, np.fmin(count, SPIKE_FULL_SAMPLES), 0).astype(np.int64)
    return np.where(known, _SPIKE_SCALE[at], np.nan)


def spike_scale_quantiles(windows: int = 10**6, seed: int = 1) -> dict[int, float]:
    """The ratios _SPIKE_SCALE holds, from ``windows`` windows of normal samples a count: the
    1 - STEP_TAIL quantile of the spike reading of windows of SPIKE_FULL_SAMPLES over that of
    each fewer count, the usual window spread (the floor's) the mean population spread of
    windows of that count."""
    rng = np.random.default_rng(seed)
    spike = (0, 1, 2, 3, 0, 1)
    top = {}
    for n in range(SPIKE_MIN_SAMPLES, SPIKE_FULL_SAMPLES + 1):
        usual = math.sqrt(2.0 / n) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))
        readings = []
        for part in np.array_split(np.arange(windows), max(1, windows // 250_000)):
            v = rng.standard_normal((len(part), n))
            x = np.c_[v.mean(1), v.std(1), v.min(1), v.max(1)]
            context = np.c_[np.full(len(v), float(n)), np.full(len(v), usual)]
            readings.append(spike_z(x, context, spike))
        top[n] = float(np.quantile(np.concatenate(readings), 1.0 - STEP_TAIL))
    return {n: top[SPIKE_FULL_SAMPLES] / q for n, q in top.items() if n < SPIKE_FULL_SAMPLES}


def spike_bars(
    device_ids: np.ndarray, readings: np.ndarray, least: float = SPIKE_Z, margin=SPIKE_MARGIN
) -> dict[str, float | None]:
    """Each device's spike bar from its training windows' spike readings (rows per device):
    the larger of SPIKE_Z and SPIKE_MARGIN x its highest; None (not read) where none of its
    windows could be read. The step reading's bars alike with STEP_Z and STEP_MARGIN."""
    devices, inverse = np.unique(np.asarray(device_ids).astype(str), return_inverse=True)
    read = np.isfinite(readings)
    top = np.full(len(devices), -np.inf)
    np.maximum.at(top, inverse[read], readings[read])
    return {
        str(device): max(least, margin * float(t)) if np.isfinite(t) else None
        for device, t in zip(devices, top, strict=True)
    }


def _largest_step_quantile(steps: int) -> float:
    """q(k) of STEP_TAIL: the size the largest of ``steps`` normal steps passes in STEP_TAIL
    of windows (in units of their spread)."""
    return NormalDist().inv_cdf(1.0 - STEP_TAIL / (2.0 * steps))


# The scale of a window's step reading by its number of steps (index: count - 1; see
# STEP_FULL_SAMPLES); windows of more samples, 1.
_STEP_SCALE = np.array(
    [np.nan]
    + [
        _largest_step_quantile(STEP_FULL_SAMPLES - 1) / _largest_step_quantile(k)
        for k in range(1, STEP_FULL_SAMPLES)
    ]
)


def step_scale(count: np.ndarray) -> np.ndarray:
    """The scale of the step reading of windows of ``count`` samples (see STEP_FULL_SAMPLES);
    NaN for fewer than 2."""
    steps = np.asarray(count, dtype=np.float64) - 1.0
    known = np.isfinite(steps) & (steps >= 1.0)
    at = np.where(known, np.fmin(steps, STEP_FULL_SAMPLES - 1), 0).astype(np.int64)
    return np.where(known, _STEP_SCALE[at], np.nan)


def _usual_known(context: np.ndarray, windows: int, least_windows: float) -> np.ndarray:
    """Whether each window's usual step or change is read: its longest horizon holds at least
    ``least_windows`` windows (every window where that is 0, or the context has no windows
    column: -1)."""
    if least_windows <= 0 or windows < 0:
        return np.ones(len(context), dtype=bool)
    return context[:, windows] >= least_windows  # False for a NaN count


def step_z(
    context: np.ndarray, step: tuple[int, int, int, int], least_windows: float = 0
) -> np.ndarray:
    """The step reading's statistic of each window (see STEP_Z) for one metric's ``step``
    context columns (its largest step, its recent windows' usual step, its sample count, the
    longest horizon's window count or -1), scaled by the window's count (step_scale): NaN where
    it cannot be read (fewer than STEP_MIN_SAMPLES samples, no usual step yet or one of 0,
    fewer than ``least_windows`` windows in the horizon: USUAL_MIN_WINDOWS)."""
    s, a, n, w = step
    usual = context[:, a]
    known = (context[:, n] >= STEP_MIN_SAMPLES) & np.isfinite(context[:, s]) & (usual > 0)
    known &= _usual_known(context, w, least_windows)
    ratio = context[:, s] / np.where(known, usual, 1.0) * step_scale(context[:, n])
    return np.where(known, ratio, np.nan)


def change_z(
    context: np.ndarray, change: tuple[int, int, int, int], least_windows: float = 0
) -> np.ndarray:
    """The change reading's statistic of each window (see CHANGE_Z) for one metric's
    ``change`` context columns (its change, its recent windows' root mean square change, its
    sample count, the longest horizon's window count or -1): NaN where it cannot be read (more
    than CHANGE_MAX_SAMPLES samples or a count not known, no change from the window before, no
    usual change yet or one of 0, fewer than ``least_windows`` windows in the horizon)."""
    c, a, n, w = change
    usual = context[:, a]
    few = context[:, n] <= CHANGE_MAX_SAMPLES  # False for a NaN count
    known = few & np.isfinite(context[:, c]) & (usual > 0)
    known &= _usual_known(context, w, least_windows)
    return np.where(known, context[:, c] / np.where(known, usual, 1.0), np.nan)


def season_z(context: np.ndarray, res: int, sd: int) -> np.ndarray:
    """The seasonal reading's z of each window, seasres / seassd (columns ``res`` and ``sd``):
    NaN where it cannot be read (no seasonal history yet, a spread of 0)."""
    spread = context[:, sd]
    known = np.isfinite(context[:, res]) & np.isfinite(spread) & (spread > 0)
    return np.where(known, context[:, res] / np.where(known, spread, 1.0), np.nan)


@dataclass(frozen=True)
class ContextCheck:
    """The second reading of a window in a context-checked model: its level and spread against
    the device's recent context (each metric's avg and sd of window means over the longest
    horizon, computed in the stream, scorer_context_names) instead of against training.

    For each used model feature of metric m: (feature - avg) / den for a level (mean, min,
    max), feature / den for a spread (std), where den = max(context sd, the device's training
    scale of m's mean). Without context (a device's first window, a job without horizons, the
    API), avg and sd fall back to the device's training center and scale of m's mean. The
    result is normalised per device like the window features (``normaliser``). A benign level
    shift, seen long enough, is the context's level: the reading adapts where the training
    normalisation cannot.

    With the window's shape (``shape``: metrics whose SPREAD_STATS are in the context) only
    the mean is read that way. The min and max are read against the window itself, |feature -
    mean| / std (0 for a flat window), and the std against the device's recent window spreads,
    std / max(stdavg, the device's training scale of its std). A level shift inflates the
    context's sd for as long as the horizon holds both levels, and read over that sd the
    window's min, max and std shrink towards its mean: a window of the new level looked
    unlike any in training for months. Its shape does not move with its level.

    Where the seasonal readings are computed (``seasonal_mean``), the mean is read against the
    nearest of the expectations: the context's level (as above) and its time of each season's
    period (seasres / seassd, the seasonal reading's z, which follows a level shift within a
    day): the smallest of the readings in magnitude. A window is out of context only if it is
    far from all.

    Beside the model's two readings, which must both pass, seven readings flag a window on
    their own (``combine``): its std against the recent spreads (``spread``), its mean against
    the same time of the week or day (``season``), its mean against the recent windows' level in
    their spread (``level``), a value that has not moved over the shortest horizon
    (``stuck``), one sample far from the rest of its window (``spike``), a step between
    consecutive samples far above the recent windows' usual one (``step``), the last two
    together short of their bars (``spike_step_share``), and a window of one sample that moved
    far more from the window before than the recent windows did (``change``)."""

    columns: tuple[str, ...]  # the context columns the scorer is given (avg, sd per metric)
    # Per used model feature: (feature index, mean feature index, avg column, sd column, level)
    uses: tuple[tuple[int, int, int, int, bool], ...]
    normaliser: DeviceNormaliser | None = None
    # The spread reading, per metric with SPREAD_STATS: (std feature index, stdavg column,
    # stdsd column, windows column, min and max feature indices or -1); read where windows >=
    # spread_min_windows.
    spread: tuple[tuple[int, int, int, int, int, int], ...] = ()
    spread_min_windows: int = 0
    spread_z: float = SPREAD_Z
    flat_z: float = FLAT_Z  # inf: no flat reading (a card from before it)
    # The seasonal readings, per metric and season with SEASON_STATS: (seasres column, seassd
    # column, the metric's count column or -1); read where the count is at most
    # season_max_samples (every window without a count column, or in a card from before it).
    season: tuple[tuple[int, int, int], ...] = ()
    season_z: float = SEASON_Z
    season_max_samples: float = SEASON_MAX_SAMPLES
    # The window's shape, per metric with SPREAD_STATS: (mean feature index, std feature index,
    # stdavg column); empty in a card from before it.
    shape: tuple[tuple[int, int, int], ...] = ()
    # The mean's reading against its time of each season too, per metric and season with
    # SEASON_STATS: (mean feature index, seasres column, seassd column); empty in a card from
    # before it.
    seasonal_mean: tuple[tuple[int, int, int], ...] = ()
    # The level reading, per metric with a windows column: (mean feature index, avg column, sd
    # column, windows column, the metric's count column or -1); empty in a card from before it.
    # Read at level_z, and at level_many_z where the count is above season_max_samples (a card
    # from before that bar: level_z).
    level: tuple[tuple[int, int, int, int, int], ...] = ()
    level_z: float = LEVEL_Z
    level_many_z: float = LEVEL_MANY_Z
    # The stuck reading, per metric with the shortest horizon's context: (mean feature index,
    # its avg, sd and windows columns, the longest horizon's sd and windows columns); read
    # where the recent windows exceed stuck_min_windows, for stuck_devices only. Empty in a
    # card from before it.
    stuck: tuple[tuple[int, int, int, int, int, int], ...] = ()
    stuck_min_windows: int = 0
    stuck_devices: frozenset[str] = frozenset()
    # The spike reading, per metric whose window count the scorer is given: (mean, std, min and
    # max feature indices, count column, stdavg column); read against spike_bars, each device's
    # bar (None: not read), a window of fewer than SPIKE_FULL_SAMPLES samples scaled to one of
    # them if spike_count_scaled (else not scaled, a card from before it), the floor from the
    # device's typical window std where no recent one is known if spike_typical_floor (else
    # none there, a card from before it). Empty in a card from before it.
    spike: tuple[tuple[int, int, int, int, int, int], ...] = ()
    spike_bars: dict[str, float | None] = dataclasses.field(default_factory=dict)
    spike_count_scaled: bool = False
    spike_typical_floor: bool = False
    # The step reading, per metric whose largest step the scorer is given: (step, stepavg,
    # count and the longest horizon's windows columns, the last -1 where there is none); read
    # against step_bars, each device's bar (None: not read), once the horizon holds
    # usual_min_windows windows (0: a card from before that wait, read from the first). Empty in
    # a card from before it.
    step: tuple[tuple[int, int, int, int], ...] = ()
    step_bars: dict[str, float | None] = dataclasses.field(default_factory=dict)
    # The spike-and-step reading: both at this share of their bars or more (inf: not read, a
    # card from before it).
    spike_step_share: float = SPIKE_STEP_SHARE
    # The change reading, per metric whose change the scorer is given: (change, changerms,
    # count and windows columns, as the step reading's); read against change_bars, each
    # device's bar (None: not read), once the horizon holds usual_min_windows windows. Empty in
    # a card from before it.
    change: tuple[tuple[int, int, int, int], ...] = ()
    change_bars: dict[str, float | None] = dataclasses.field(default_factory=dict)
    usual_min_windows: int = 0

    @classmethod
    def plan(cls, feature_names, context_names) -> ContextCheck | None:
        """The features a context check reads, or None when there are none (no context
        columns, or no mean feature beside them)."""
        index = {name: j for j, name in enumerate(feature_names)}
        context = {name: j for j, name in enumerate(context_names)}
        columns = context_columns(context_names)
        # Each metric's horizons with a level and spread: the longest is read, the shortest
        # too by the stuck reading.
        horizons: dict[str, list[int]] = {}
        for metric, stat, seconds in sorted(columns):
            if stat == "avg" and (metric, "sd", seconds) in columns:
                horizons.setdefault(metric, []).append(seconds)

        def at(metric: str, stats, longest: bool = True) -> list[int] | None:
            """The columns of these statistics over the metric's longest (or shortest)
            horizon; None where one is missing."""
            if metric not in horizons:
                return None
            seconds = max(horizons[metric]) if longest else min(horizons[metric])
            found = [columns.get((metric, stat, seconds)) for stat in stats]
            return None if None in found else found

        uses = []
        for j, name in enumerate(feature_names):
            metric, _, aggregate = name.rpartition("_")
            level = aggregate in CONTEXT_LEVELS
            if not (level or aggregate in CONTEXT_SPREADS) or f"{metric}_mean" not in index:
                continue
            if (found := at(metric, ("avg", "sd"))) is not None:
                uses.append((j, index[f"{metric}_mean"], *found, level))
        spread = []
        for j, name in enumerate(feature_names):
            metric, _, aggregate = name.rpartition("_")
            found = at(metric, ("stdavg", "stdsd", "windows"))
            if aggregate == "std" and found is not None:
                bounds = (index.get(f"{metric}_min", -1), index.get(f"{metric}_max", -1))
                spread.append((j, *found, *bounds))
        season, seasonal_mean = [], []
        for jm in dict.fromkeys(jm for _, jm, _, _, _ in uses):
            metric = feature_names[jm].rpartition("_")[0]
            for name, res in context.items():  # each season's residual with its spread
                if name.startswith(prefix := f"{metric}_seasres"):
                    sd = context.get(f"{metric}_seassd{name.removeprefix(prefix)}")
                    if sd is not None:
                        season.append((res, sd, context.get(f"{metric}_count", -1)))
                        seasonal_mean.append((jm, res, sd))
        if not uses:
            return None
        stdavg = {j: a for j, a, _, _, _, _ in spread}
        shape = [(jm, j, stdavg[j]) for j, jm, _, _, level in uses if not level and j in stdavg]
        # The level reading counts the context's windows as the spread reading does.
        windows = {feature_names[j].rpartition("_")[0]: n for j, _, _, n, _, _ in spread}
        level_reading = [
            (jm, a, s, windows[metric], context.get(f"{metric}_count", -1))
            for j, jm, a, s, _ in uses
            if j == jm and (metric := feature_names[jm].rpartition("_")[0]) in windows
        ]
        stuck = []
        for jm in dict.fromkeys(jm for j, jm, _, _, _ in uses if j == jm):
            metric = feature_names[jm].rpartition("_")[0]
            recent = at(metric, ("avg", "sd", "windows"), longest=False)
            longest = at(metric, ("sd", "windows"))
            if recent is not None and longest is not None and len(horizons[metric]) > 1:
                stuck.append((jm, *recent, *longest))
        spike = [
            (jm, js, index[f"{metric}_min"], index[f"{metric}_max"], context[count], a)
            for jm, js, a in shape
            if (metric := feature_names[jm].rpartition("_")[0])
            and (count := f"{metric}_count") in context
            and f"{metric}_min" in index
            and f"{metric}_max" in index
        ]

        def against_usual(own: str, usual_stat: str) -> list[tuple[int, int, int, int]]:
            """Per metric with them: the columns of the window's ``own`` figure, its usual one
            over the longest horizon (``usual_stat``), the window's count and the horizon's
            window count (-1: none)."""
            return [
                (
                    context[f"{metric}_{own}"],
                    *usual,
                    context[f"{metric}_count"],
                    (at(metric, ("windows",)) or [-1])[0],
                )
                for jm in dict.fromkeys(jm for _, jm, _, _, _ in uses)
                if (metric := feature_names[jm].rpartition("_")[0])
                and f"{metric}_{own}" in context
                and f"{metric}_count" in context
                and (usual := at(metric, (usual_stat,))) is not None
            ]

        step = against_usual("step", "stepavg")
        change = against_usual("change", "changerms")
        return cls(
            tuple(context_names),
            tuple(uses),
            spread=tuple(spread),
            season=tuple(season),
            shape=tuple(shape),
            seasonal_mean=tuple(seasonal_mean),
            level=tuple(level_reading),
            stuck=tuple(stuck),
            spike=tuple(spike),
            step=tuple(step),
            change=tuple(change),
        )

    def spread_reading(self, x: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """Per window, the largest of its metrics' |std - stdavg| / stdsd over the bar it must
        pass: spread_z, or flat_z for a flat window (min = max); 1 is flagged. 0 where it is
        not read (no context, fewer than spread_min_windows windows in it, a context spread
        of 0)."""
        out = np.zeros(len(x))
        if context is None:
            return out
        x = np.asarray(x, dtype=np.float64)
        for j, a, s, n, lo, hi in self.spread:
            sd = context[:, s]
            known = (context[:, n] >= self.spread_min_windows) & (sd > 0)
            z = np.abs(x[:, j] - context[:, a]) / np.where(known, sd, 1.0)
            bar = np.full(len(x), self.spread_z)
            if lo >= 0 and hi >= 0:
                bar[x[:, lo] == x[:, hi]] = min(self.flat_z, self.spread_z)
            out = np.fmax(out, np.where(known & np.isfinite(z), z / bar, 0.0))
        return out

    def season_reading(self, context: np.ndarray | None, rows: int) -> np.ndarray:
        """Per window, the largest |seasres| / seassd of its metrics over season_z (1 is
        flagged); 0 where it is not read (no context, no seasonal history yet, a spread of
        0, more than season_max_samples samples in the window)."""
        out = np.zeros(rows)
        if context is None:
            return out
        for r, s, n in self.season:
            z = np.abs(season_z(context, r, s))
            if n >= 0:  # a NaN count (not known) is read
                z = np.where(context[:, n] > self.season_max_samples, np.nan, z)
            out = np.fmax(out, np.where(np.isfinite(z), z / self.season_z, 0.0))
        return out

    def level_reading(
        self, fixed: DeviceNormaliser, rows: np.ndarray, x: np.ndarray, context: np.ndarray | None
    ) -> np.ndarray:
        """Per window, the largest of its metrics' |mean - avg| / max(sd, the device's
        training scale of its mean) over level_z, or level_many_z for a window of more than
        season_max_samples samples (1 is flagged); 0 where it is not read (no context, fewer
        than spread_min_windows windows in it)."""
        out = np.zeros(len(x))
        if context is None or not self.level:
            return out
        _, scale = fixed.typical_rows(rows)
        x = np.asarray(x, dtype=np.float64)
        for jm, a, s, n, c in self.level:
            known = (context[:, n] >= self.spread_min_windows) & np.isfinite(context[:, a])
            den = np.fmax(context[:, s], scale[:, jm])  # fmax: a NaN sd gives the scale
            z = np.abs(x[:, jm] - context[:, a]) / den
            bar = np.full(len(x), self.level_z)
            if c >= 0:  # a NaN count (not known) is read at level_z
                bar[context[:, c] > self.season_max_samples] = self.level_many_z
            out = np.fmax(out, np.where(known & np.isfinite(z), z / bar, 0.0))
        return out

    def stuck_reading(
        self, fixed: DeviceNormaliser, rows: np.ndarray, x: np.ndarray, context: np.ndarray | None
    ) -> np.ndarray:
        """Per window, its recent windows over stuck_min_windows where its value has not moved
        over them (see STUCK_SHARE; 1 is the bar, above it flagged); 0 where it is not read (no
        context, a device not in stuck_devices, fewer than spread_min_windows windows in the
        longest horizon, a longest spread of 0)."""
        out = np.zeros(len(x))
        if context is None or not self.stuck or not self.stuck_devices:
            return out
        assert len(fixed.devices) == len(self.normaliser.devices), "one model's devices"
        read = self._stuck_rows[rows]
        x = np.asarray(x, dtype=np.float64)
        std_of = {jm: js for jm, js, _ in self.shape}
        for jm, a, s, n, long_sd, long_n in self.stuck:
            bar = STUCK_SHARE * context[:, long_sd]
            still = (context[:, s] <= bar) & (np.abs(x[:, jm] - context[:, a]) <= bar)
            if jm in std_of:  # the window's own samples have not moved either (0 for one)
                still &= x[:, std_of[jm]] <= bar
            known = read & still & (bar > 0) & (context[:, long_n] >= self.spread_min_windows)
            z = context[:, n] / max(self.stuck_min_windows, 1)
            out = np.fmax(out, np.where(known & np.isfinite(z), z, 0.0))
        return out

    def spike_reading(
        self, fixed: DeviceNormaliser, rows: np.ndarray, x: np.ndarray, context: np.ndarray | None
    ) -> np.ndarray:
        """Per window, the largest of its metrics' spike statistics (``spike_statistics``)
        over its device's bar (1 is the bar, above it flagged); 0 where it is not read (no
        context, a device without a bar, a window it cannot read)."""
        if context is None or not self.spike:
            return np.zeros(len(x))
        readings = self.spike_statistics(fixed, rows, x, context)
        return _over_bars(readings, self._spike_bar_rows[rows], len(x))

    def spike_statistics(
        self, fixed: DeviceNormaliser, rows: np.ndarray, x: np.ndarray, context: np.ndarray
    ) -> list[np.ndarray]:
        """Per metric of ``spike``, each window's ``spike_z`` as this check reads it (its
        count's scale, its floor where no recent spread is known; ``fixed`` and ``rows``: the
        model's own normaliser and each window's device in it)."""
        x = np.asarray(x, dtype=np.float64)
        center = fixed.typical_rows(rows)[0] if self.spike_typical_floor else None
        return [
            spike_z(
                x,
                context,
                spike,
                self.spike_count_scaled,
                None if center is None else center[:, spike[1]],
            )
            for spike in self.spike
        ]

    @cached_property
    def _spike_bar_rows(self) -> np.ndarray:
        return self._bar_rows(self.spike_bars)

    def step_reading(self, rows: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """Per window, the largest of its metrics' step statistics (``step_z``) over its
        device's bar (1 is the bar, above it flagged); 0 where it is not read (no context, a
        device without a bar, a window it cannot read)."""
        if context is None or not self.step:
            return np.zeros(len(rows))
        return _over_bars(self.step_statistics(context), self._step_bar_rows[rows], len(rows))

    def step_statistics(self, context: np.ndarray) -> list[np.ndarray]:
        """Per metric of ``step``, each window's ``step_z`` as this check reads it (once the
        horizon holds usual_min_windows windows)."""
        return [step_z(context, step, self.usual_min_windows) for step in self.step]

    @cached_property
    def _step_bar_rows(self) -> np.ndarray:
        return self._bar_rows(self.step_bars)

    def change_reading(self, rows: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """Per window, the largest of its metrics' change statistics (``change_z``) over its
        device's bar (1 is the bar, above it flagged); 0 where it is not read (no context, a
        device without a bar, a window it cannot read)."""
        if context is None or not self.change:
            return np.zeros(len(rows))
        return _over_bars(self.change_statistics(context), self._change_bar_rows[rows], len(rows))

    def change_statistics(self, context: np.ndarray) -> list[np.ndarray]:
        """Per metric of ``change``, each window's ``change_z`` as this check reads it (once
        the horizon holds usual_min_windows windows)."""
        return [change_z(context, change, self.usual_min_windows) for change in self.change]

    @cached_property
    def _change_bar_rows(self) -> np.ndarray:
        return self._bar_rows(self.change_bars)

    def _bar_rows(self, device_bars: dict[str, float | None]) -> np.ndarray:
        """Per device of the normalisation and the fleet's row last: its bar (inf: not read).
        A device the model has not seen gets the devices' median bar."""
        assert self.normaliser is not None, "fitted context check"
        bars = [device_bars.get(d) for d in self.normaliser.devices]
        known = [b for b in bars if b is not None]
        fleet = float(np.median(known)) if known else math.inf
        return np.array([*(math.inf if b is None else b for b in bars), fleet])

    @cached_property
    def _stuck_rows(self) -> np.ndarray:
        """Per device of the normalisation (the model's devices, in its order, as training fits
        both on the same windows) and the fleet's row last (unknown devices): whether the stuck
        reading is read."""
        assert self.normaliser is not None, "fitted context check"
        read = [d in self.stuck_devices for d in self.normaliser.devices]
        return np.array([*read, False], dtype=bool)

    def combine(
        self,
        scores,
        threshold: float,
        fixed: DeviceNormaliser,
        rows: np.ndarray,
        x: np.ndarray,
        context,
    ) -> np.ndarray:
        """The scores with the spread, seasonal, level, stuck, spike, step, spike-and-step and
        change readings folded in (``fold``). ``fixed`` and ``rows``: the model's own
        normalisation and the windows' devices in it."""
        return self.fold(scores, threshold, self.readings(fixed, rows, x, context))

    @staticmethod
    def fold(scores, threshold: float, readings: dict[str, np.ndarray]) -> np.ndarray:
        """The scores with ``readings`` folded in: a window past a bar scores at least the
        threshold times its reading (flagged above it)."""
        if not readings:
            return scores
        reading = np.zeros(len(scores))
        for r in readings.values():
            reading = np.fmax(reading, r)
        return np.fmax(scores, threshold * reading)

    def without_readings(self) -> ContextCheck:
        """The same check with none of the readings beside the model's two: the model's own
        score."""
        return dataclasses.replace(self, **dict.fromkeys(READING_FIELDS, ()))

    def readings(self, fixed, rows, x, context) -> dict[str, np.ndarray]:
        """Each reading that flags a window on its own, by name: per window, its value over
        its bar (1 is the bar, above it flagged; 0 where it is not read). Empty where the
        check reads none of them."""
        if not any(getattr(self, name) for name in READING_FIELDS):
            return {}
        spike = self.spike_reading(fixed, rows, x, context)
        step = self.step_reading(rows, context)
        return {
            "spread": self.spread_reading(x, context),
            "seasonal": self.season_reading(context, len(x)),
            "level": self.level_reading(fixed, rows, x, context),
            "stuck": self.stuck_reading(fixed, rows, x, context),
            "spike": spike,
            "step": step,
            "spike and step": np.fmin(spike, step) / self.spike_step_share,
            "change": self.change_reading(rows, context),
        }

    @staticmethod
    def flagged_by(scores, threshold: float, readings: dict[str, np.ndarray]) -> list[str | None]:
        """Per window, the name of the reading (of ``readings``) that sets its score (``fold``)
        above the threshold: the largest, where it passes its bar and the model's own score
        (``scores``) over the threshold; None where the model's score flags the window, or
        nothing does."""
        if not readings:
            return [None] * len(scores)
        names = list(readings)
        values = np.column_stack(list(readings.values()))
        best = np.argmax(values, axis=1)
        top = values[np.arange(len(values)), best]
        sets_score = (top > 1) & ~(np.asarray(scores, dtype=np.float64) > threshold * top)
        return [names[b] if sets else None for b, sets in zip(best, sets_score, strict=True)]

    def read(
        self, fixed: DeviceNormaliser, rows: np.ndarray, x: np.ndarray, context: np.ndarray | None
    ) -> np.ndarray:
        """The context reading of windows ``x`` (model features) of device ``rows``, not yet
        normalised."""
        center, scale = fixed.typical_rows(rows)
        x = np.asarray(x, dtype=np.float64)
        out = np.empty((len(x), len(self.uses)))
        shape = {jm: (js, a) for jm, js, a in self.shape}
        seasonal: dict[int, list[tuple[int, int]]] = {}
        for jm, r, q in self.seasonal_mean:
            seasonal.setdefault(jm, []).append((r, q))
        for k, (j, jm, a, s, level) in enumerate(self.uses):
            if j != jm and jm in shape:
                out[:, k] = self._shape_reading(j, jm, *shape[jm], level, x, context, center, scale)
                continue
            avg = sd = np.full(len(x), np.nan)
            if context is not None:
                avg, sd = context[:, a], context[:, s]
            avg = np.where(np.isfinite(avg), avg, center[:, jm])
            den = np.fmax(np.where(np.isfinite(sd), sd, scale[:, jm]), scale[:, jm])
            out[:, k] = ((x[:, j] - avg) if level else x[:, j]) / den
            for r, q in seasonal.get(jm, ()) if j == jm and context is not None else ():
                z = season_z(context, r, q)
                nearer = np.isfinite(z) & (np.abs(z) < np.abs(out[:, k]))
                out[:, k] = np.where(nearer, z, out[:, k])
        return out

    @staticmethod
    def _shape_reading(j, jm, js, a, level, x, context, center, scale) -> np.ndarray:
        """Feature j of the window's shape (see the class): a min or max against the window's
        own mean and std, the std against the device's recent window spreads."""
        std = x[:, js]
        if level:
            out = np.zeros(len(x))
            np.divide(np.abs(x[:, j] - x[:, jm]), std, out=out, where=std > 0)
            return out
        typical = np.full(len(x), np.nan) if context is None else context[:, a]
        typical = np.where(np.isfinite(typical), typical, center[:, js])
        return std / np.fmax(typical, scale[:, js])

    def transform_rows(self, fixed, rows, x, context) -> np.ndarray:
        assert self.normaliser is not None, "fitted context check"
        return self.normaliser.transform_rows(rows, self.read(fixed, rows, x, context))

    def fitted(
        self,
        normaliser: DeviceNormaliser,
        spread_min_windows: int = 0,
        stuck_min_windows: int = 0,
        stuck_devices=(),
        spike_bars: dict[str, float | None] | None = None,
        step_bars: dict[str, float | None] | None = None,
        change_bars: dict[str, float | None] | None = None,
    ) -> ContextCheck:
        return dataclasses.replace(
            self,
            normaliser=normaliser,
            spread_min_windows=spread_min_windows,
            stuck_min_windows=stuck_min_windows,
            stuck_devices=frozenset(stuck_devices),
            spike_bars=dict(spike_bars or {}),
            step_bars=dict(step_bars or {}),
            change_bars=dict(change_bars or {}),
        )

    def to_card(self, feature_names) -> dict:
        assert self.normaliser is not None
        return {
            "columns": list(self.columns),
            "uses": [
                {
                    "feature": feature_names[j],
                    "avg": self.columns[a],
                    "sd": self.columns[s],
                    "reading": "level" if level else "spread",
                }
                for j, _, a, s, level in self.uses
            ],
            "normalisation": self.normaliser.to_card(),
            "spread": [
                {
                    "feature": feature_names[j],
                    "avg": self.columns[a],
                    "sd": self.columns[s],
                    "windows": self.columns[n],
                }
                for j, a, s, n, _, _ in self.spread
            ],
            "spread_z": self.spread_z,
            "flat_z": self.flat_z,
            "season": [
                {"res": self.columns[r], "sd": self.columns[s]}
                | ({"count": self.columns[n]} if n >= 0 else {})
                for r, s, n in self.season
            ],
            "season_z": self.season_z,
            "season_max_samples": self.season_max_samples,
            "spread_min_windows": self.spread_min_windows,
            "shape": bool(self.shape),
            "seasonal_mean": bool(self.seasonal_mean),
            "level": [
                {
                    "feature": feature_names[jm],
                    "avg": self.columns[a],
                    "sd": self.columns[s],
                    "windows": self.columns[n],
                }
                | ({"count": self.columns[c]} if c >= 0 else {})
                for jm, a, s, n, c in self.level
            ],
            "level_z": self.level_z,
            "level_many_z": self.level_many_z,
            "stuck": [
                {
                    "feature": feature_names[jm],
                    "avg": self.columns[a],
                    "sd": self.columns[s],
                    "windows": self.columns[n],
                    "longest_sd": self.columns[ls],
                    "longest_windows": self.columns[ln],
                }
                for jm, a, s, n, ls, ln in self.stuck
            ],
            "stuck_share": STUCK_SHARE,
            "stuck_min_windows": self.stuck_min_windows,
            "stuck_devices": sorted(self.stuck_devices),
            "spike": [
                {
                    "feature": feature_names[jm],
                    "count": self.columns[n],
                    "stdavg": self.columns[a],
                }
                for jm, _, _, _, n, a in self.spike
            ],
            "spike_z": SPIKE_Z,
            "spike_margin": SPIKE_MARGIN,
            "spike_floor": SPIKE_FLOOR,
            "spike_bars": dict(sorted(self.spike_bars.items())),
            "spike_full_samples": SPIKE_FULL_SAMPLES if self.spike_count_scaled else 0,
            "spike_typical_floor": self.spike_typical_floor,
            "step": [
                {"step": self.columns[s], "stepavg": self.columns[a], "count": self.columns[n]}
                | ({"windows": self.columns[w]} if w >= 0 else {})
                for s, a, n, w in self.step
            ],
            "step_z": STEP_Z,
            "step_margin": STEP_MARGIN,
            "step_bars": dict(sorted(self.step_bars.items())),
            "spike_step_share": self.spike_step_share,
            "change": [
                {"change": self.columns[c], "changerms": self.columns[a], "count": self.columns[n]}
                | ({"windows": self.columns[w]} if w >= 0 else {})
                for c, a, n, w in self.change
            ],
            "change_z": CHANGE_Z,
            "change_margin": CHANGE_MARGIN,
            "change_bars": dict(sorted(self.change_bars.items())),
            "usual_min_windows": self.usual_min_windows,
        }

    @classmethod
    def from_card(cls, card: dict, feature_names) -> ContextCheck:
        try:
            columns = tuple(str(c) for c in card["columns"])
            planned = cls.plan(feature_names, columns)
            uses = [(u["feature"], u["avg"], u["sd"], u["reading"]) for u in card["uses"]]
        except (KeyError, TypeError) as exc:
            raise CalibrationError(f"context check in the model card is malformed: {exc}") from exc
        expected = [
            (feature_names[j], columns[a], columns[s], "level" if level else "spread")
            for j, _, a, s, level in (planned.uses if planned else ())
        ]
        if planned is None or uses != expected:
            raise CalibrationError("the card's context check does not fit the model's features")
        normaliser = DeviceNormaliser.from_card(card.get("normalisation") or {}, len(uses))
        # A card without a spread reading (trained before it existed) reads none.
        spread = [
            (u.get("feature"), u.get("avg"), u.get("sd"), u.get("windows"))
            for u in card.get("spread") or ()
        ]
        planned_spread = [
            (feature_names[j], columns[a], columns[s], columns[n])
            for j, a, s, n, _, _ in planned.spread
        ]
        if spread and spread != planned_spread:
            raise CalibrationError("the card's spread reading does not fit the model's features")
        check = planned.fitted(normaliser, int(card.get("spread_min_windows") or 0))
        # A card from before the seasonal reading reads none.
        # A card from before the seasonal reading's sample count reads every window.
        season = [(u.get("res"), u.get("sd")) for u in card.get("season") or ()]
        planned_season = [(columns[r], columns[s]) for r, s, _ in planned.season]
        if season and season != planned_season:
            raise CalibrationError("the card's seasonal reading does not fit its context")
        counted = all("count" in u for u in card.get("season") or ())
        season_counts = [u.get("count") for u in card.get("season") or ()]
        if counted and season_counts != [columns[n] for _, _, n in planned.season if n >= 0]:
            raise CalibrationError("the card's seasonal reading does not fit its context")
        season_z = _card_number(card, "season_z", SEASON_Z)
        season_max_samples = _card_number(card, "season_max_samples", SEASON_MAX_SAMPLES)
        # A card from before the level reading reads none.
        planned_level = [
            (feature_names[jm], columns[a], columns[s], columns[n])
            for jm, a, s, n, _ in planned.level
        ]
        level = _card_reading(card, "level", ("feature", "avg", "sd", "windows"), planned_level)
        level_counts = [u.get("count") for u in card.get("level") or () if "count" in u]
        if level_counts and level_counts != [columns[c] for *_, c in planned.level if c >= 0]:
            raise CalibrationError("the card's level reading does not fit its context")
        level_z = _card_number(card, "level_z", LEVEL_Z)
        # A card from before the bar for windows of many samples reads every window at level_z.
        level_many_z = _card_number(card, "level_many_z", level_z)
        # A card from before the stuck reading reads none.
        keys = ("feature", "avg", "sd", "windows", "longest_sd", "longest_windows")
        planned_stuck = [
            (feature_names[jm], *(columns[c] for c in cols)) for jm, *cols in planned.stuck
        ]
        stuck = _card_reading(card, "stuck", keys, planned_stuck)
        stuck_devices = card.get("stuck_devices") or []
        if not isinstance(stuck_devices, list):
            raise CalibrationError("the card's stuck_devices is not a list of device ids")
        # A card from before the window's shape reads min, max and std against the context.
        check = dataclasses.replace(
            check,
            season=(
                ()
                if not season
                else planned.season
                if counted
                else tuple((r, s, -1) for r, s, _ in planned.season)
            ),
            season_z=season_z,
            season_max_samples=season_max_samples,
            shape=planned.shape if card.get("shape") is True else (),
            seasonal_mean=planned.seasonal_mean if card.get("seasonal_mean") is True else (),
            level=planned.level if level else (),
            level_z=level_z,
            level_many_z=level_many_z,
            stuck=planned.stuck if stuck else (),
            stuck_min_windows=int(_card_number(card, "stuck_min_windows", 0)),
            stuck_devices=frozenset(str(d) for d in stuck_devices),
        )
        # A card from before the spike, step or change reading reads none of it.
        planned_spike = [
            (feature_names[jm], columns[n], columns[a]) for jm, _, _, _, n, a in planned.spike
        ]
        spike = _card_reading(card, "spike", ("feature", "count", "stdavg"), planned_spike)
        # Their windows column follows from the columns (a card from before it has none).
        planned_step = [tuple(columns[c] for c in cols[:3]) for cols in planned.step]
        step = _card_reading(card, "step", ("step", "stepavg", "count"), planned_step)
        planned_change = [tuple(columns[c] for c in cols[:3]) for cols in planned.change]
        change = _card_reading(card, "change", ("change", "changerms", "count"), planned_change)
        check = dataclasses.replace(
            check,
            spike=planned.spike if spike else (),
            spike_bars=_card_bars(card, "spike_bars"),
            # A card from before the scale reads every count as it is.
            spike_count_scaled=_spike_count_scaled(card),
            # A card from before the typical floor has none where no recent spread is known.
            spike_typical_floor=card.get("spike_typical_floor") is True,
            step=planned.step if step else (),
            step_bars=_card_bars(card, "step_bars"),
            # A card from before the spike-and-step reading reads none.
            spike_step_share=_card_number(card, "spike_step_share", math.inf),
            change=planned.change if change else (),
            change_bars=_card_bars(card, "change_bars"),
            # A card from before the wait reads them from a horizon's first window.
            usual_min_windows=int(_card_number(card, "usual_min_windows", 0)),
        )
        if not spread:
            return dataclasses.replace(check, spread=())
        # A card from before the flat reading reads none.
        return dataclasses.replace(
            check,
            spread_z=_card_number(card, "spread_z", None),
            flat_z=_card_number(card, "flat_z", math.inf),
        )


def _over_bars(readings, bars: np.ndarray, rows: int) -> np.ndarray:
    """Per window, the largest of ``readings`` (NaN: not read) over its device's bar."""
    out = np.zeros(rows)
    for z in readings:
        z = z / bars
        out = np.fmax(out, np.where(np.isfinite(z), z, 0.0))
    return out


def _card_reading(card: dict, name: str, keys, planned: list[tuple]) -> bool:
    """Whether the card reads its ``name`` reading (a card from before the reading has none):
    each of its entries' ``keys`` must be the ``planned`` columns, else it does not fit."""
    found = [tuple(u.get(k) for k in keys) for u in card.get(name) or ()]
    if found and found != planned:
        raise CalibrationError(f"the card's {name} reading does not fit its context")
    return bool(found)


def _card_bars(card: dict, key: str) -> dict[str, float | None]:
    """A map of devices to bars of the card (None: not read); empty where it is absent."""
    bars = card.get(key) or {}
    if not isinstance(bars, dict) or not all(
        b is None or (isinstance(b, int | float) and b > 0) for b in bars.values()
    ):
        raise CalibrationError(f"the card's {key} is not a map of devices to bars")
    return {str(d): None if b is None else float(b) for d, b in bars.items()}


def _spike_count_scaled(card: dict) -> bool:
    """Whether the card's spike reading scales windows of few samples (spike_full_samples:
    SPIKE_FULL_SAMPLES; 0 or absent: not, a card from before it); any other count is one this
    version has no scale for."""
    full = _card_number(card, "spike_full_samples", 0)
    if full not in (0, SPIKE_FULL_SAMPLES):
        raise CalibrationError(
            f"spike_full_samples in the model card is {full:g}, but this version scales the "
            f"spike reading to windows of {SPIKE_FULL_SAMPLES} samples only: retrain the model "
            "with this version"
        )
    return full == SPIKE_FULL_SAMPLES


def _card_number(card: dict, key: str, default: float | None) -> float:
    """A number of the card (``default`` where it is absent; None: it must be there)."""
    try:
        return float(card.get(key, default))
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{key} in the model card is malformed: {exc}") from exc


@dataclass(frozen=True)
class Severity:
    """Maps a raw score (higher = more anomalous) to 0-100, monotonically: piecewise linear
    through the training-score quantile knots up to the threshold (severity 50), then
    50 + 50 * (1 - exp(-(score - threshold) / tail_scale)) above it. A window is flagged
    exactly when its score is above the threshold, i.e. when its severity is above 50."""

    knot_scores: tuple[float, ...]
    knot_severities: tuple[float, ...]
    threshold: float
    tail_scale: float

    @classmethod
    def fit(cls, train_scores: np.ndarray, threshold: float) -> Severity:
        s = np.asarray(train_scores, dtype=np.float64)
        s = s[np.isfinite(s)]
        if len(s) == 0:
            raise CalibrationError("no finite training scores to calibrate severity on")
        xs, ys = [], []
        for q, severity in SEVERITY_KNOTS:
            v = float(np.quantile(s, q))
            # Knots must rise strictly and stay below the threshold (ties among the training
            # scores, or a threshold below the 99th percentile, drop knots).
            if v < threshold and (not xs or v > xs[-1]):
                xs.append(v)
                ys.append(severity)
        below = xs[-1] if xs else threshold - max(abs(threshold), 1.0)
        tail = max(threshold - below, 1e-12)
        return cls(tuple(xs), tuple(ys), float(threshold), float(tail))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        xs = np.array([*self.knot_scores, self.threshold])
        ys = np.array([*self.knot_severities, SEVERITY_AT_THRESHOLD])
        out = np.interp(s, xs, ys, left=0.0)
        above = s > self.threshold
        out[above] = SEVERITY_AT_THRESHOLD + (100.0 - SEVERITY_AT_THRESHOLD) * (
            1.0 - np.exp(-(s[above] - self.threshold) / self.tail_scale)
        )
        out[np.isnan(s)] = np.nan
        return out

    def to_card(self) -> dict:
        return {
            "threshold": self.threshold,
            "knots": [[x, y] for x, y in zip(self.knot_scores, self.knot_severities, strict=True)]
            + [[self.threshold, SEVERITY_AT_THRESHOLD]],
            "tail_scale": self.tail_scale,
            "formula": (
                "piecewise linear through knots [score, severity] up to the threshold; above "
                "it 50 + 50 * (1 - exp(-(score - threshold) / tail_scale))"
            ),
        }

    @classmethod
    def from_card(cls, card: dict) -> Severity:
        try:
            knots = [(float(x), float(y)) for x, y in card["knots"]][:-1]
            threshold = float(card["threshold"])
            tail = float(card["tail_scale"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"calibration in the model card is malformed: {exc}") from exc
        xs = [x for x, _ in knots]
        if any(b <= a for a, b in itertools.pairwise(xs)) or (xs and xs[-1] >= threshold):
            raise CalibrationError("calibration knots must rise strictly below the threshold")
        if not tail > 0:
            raise CalibrationError("calibration tail_scale must be positive")
        return cls(tuple(xs), tuple(y for _, y in knots), threshold, tail)


@dataclass(frozen=True)
class PartialWindows:
    """Where many metrics share one model (one-metric catalogues read the window's count in
    their context check), a window of under PARTIAL_SHARE of its device's usual sample count
    is judged on its level: each metric's mean is taken at its standard error's scale (its
    distance from the typical mean times the root of the window's share of the usual count),
    its std set to the device's typical std and its min and max to that mean plus the device's
    typical distance of each from the mean. Its few samples' narrow spread then reads as
    usual (a stream's first window of one sample per device, every spread 0, was flagged on
    most devices), and a level far off still reads far off. ``column``: the window's sample
    count in the job's context columns (``name``); ``usual``: each device's median training
    count, the fleet's last (unknown devices)."""

    name: str
    column: int
    usual: np.ndarray  # [devices + 1]
    metrics: tuple[tuple[int, int, int, int], ...]  # (mean, std, min, max) feature columns

    @staticmethod
    def _metrics(feature_names) -> tuple[tuple[int, int, int, int], ...]:
        index = {n: j for j, n in enumerate(feature_names)}
        return tuple(
            (j, index[f"{m}_std"], index[f"{m}_min"], index[f"{m}_max"])
            for n, j in index.items()
            if n.endswith("_mean")
            and (m := n.removesuffix("_mean"))
            and all(f"{m}_{a}" in index for a in ("std", "min", "max"))
        )

    @classmethod
    def fit(
        cls, feature_names, context_names, n_devices: int, rows: np.ndarray, context
    ) -> PartialWindows | None:
        """The rule, fitted on the training windows' counts (``rows``: each window's device
        index of the normaliser, which has ``n_devices``); None where the context has no count
        column (``<metric>_count``) or the features no spread."""
        import pandas as pd

        names = [c for c in context_names if c.endswith("_count")]
        metrics = cls._metrics(feature_names)
        if context is None or len(names) != 1 or not metrics:
            return None
        column = list(context_names).index(names[0])
        count = pd.Series(np.asarray(context, dtype=np.float64)[:, column])
        usual = np.full(n_devices + 1, np.nan)
        by_device = count.groupby(rows).median()  # NaN counts left out, as median does
        usual[by_device.index.to_numpy()] = by_device.to_numpy()
        usual[-1] = count.median()
        return cls(names[0], column, usual, metrics)

    def partial(self, rows: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """Each row's share of its device's usual sample count (device indices ``rows``, -1
        the fleet) where under PARTIAL_SHARE, else NaN."""
        share = np.full(len(rows), np.nan)
        if context is None:
            return share
        count = np.asarray(context, dtype=np.float64)[:, self.column]
        with np.errstate(invalid="ignore", divide="ignore"):
            got = count / self.usual[rows]
            p = np.isfinite(got) & (got < PARTIAL_SHARE)
        share[p] = got[p]
        return share

    def fill(
        self, normaliser: DeviceNormaliser, rows: np.ndarray, x: np.ndarray, context
    ) -> np.ndarray:
        """``x`` with the partial rows' features set as the class says (a copy where any is
        partial). Their means' distance from the typical mean is taken at the square root of
        their share of the usual count: a mean of fewer samples strays further by chance (its
        standard error), a level far off stays far off."""
        share = self.partial(rows, context)
        p = np.isfinite(share)
        if not p.any():
            return x
        x = np.array(x, dtype=np.float64)
        center, _ = normaliser.typical_rows(rows[p])
        shrink = np.sqrt(np.clip(share[p], 0.0, 1.0))
        for jm, js, jn, jx in self.metrics:
            x[p, jm] = center[:, jm] + (x[p, jm] - center[:, jm]) * shrink
            x[p, js] = center[:, js]
            x[p, jn] = x[p, jm] + center[:, jn] - center[:, jm]
            x[p, jx] = x[p, jm] + center[:, jx] - center[:, jm]
        return x

    def to_card(self, normaliser: DeviceNormaliser) -> dict:
        def number(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {
            "rule": f"a window of under {PARTIAL_SHARE:g} of its device's usual sample count "
            "is judged on its level: its spreads set to the device's typical ones",
            "share": PARTIAL_SHARE,
            "count_column": self.name,
            "context_index": self.column,
            "usual_count": {
                d: number(u) for d, u in zip(normaliser.devices, self.usual, strict=False)
            },
            "fleet_usual_count": number(self.usual[-1]),
        }

    @classmethod
    def from_card(cls, card: dict, feature_names, normaliser: DeviceNormaliser) -> PartialWindows:
        try:
            usual = card["usual_count"]
            values = [usual.get(d) for d in normaliser.devices] + [card["fleet_usual_count"]]
            return cls(
                str(card["count_column"]),
                int(card["context_index"]),
                np.array([np.nan if v is None else v for v in values], dtype=np.float64),
                cls._metrics(feature_names),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CalibrationError(
                f"partial_windows in the model card is malformed: {exc}"
            ) from exc

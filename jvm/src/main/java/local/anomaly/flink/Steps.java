package local.anomaly.flink;

import org.apache.flink.table.functions.AggregateFunction;

import java.util.Arrays;

/**
 * A metric's steps within a window: the differences between its consecutive samples in time
 * order (common/features.py, STEP_AGGREGATES). {@code STEP_MAX(ts_ms, value)} is the largest
 * step in size, {@code STEP_RMS(ts_ms, value)} their root mean square; both NULL for a window
 * of fewer than two samples. The samples are sorted by time (then value, for samples of one
 * time) when the window closes, so the result depends only on the window's samples, not on
 * the order they came in: the stream and the batch path (training) compute the same figure.
 * NULL times or values are left out.
 *
 * <p>Registered for Flink SQL in common/flink_env.py, in every table environment.
 */
public final class Steps {
    private Steps() {}

    /** The window's samples: their times (ms) and values, the first {@code n} of each. */
    public static class Acc {
        public long[] ts = new long[16];
        public double[] v = new double[16];
        public int n;

        void add(long t, double value) {
            if (n == ts.length) {
                ts = Arrays.copyOf(ts, 2 * n);
                v = Arrays.copyOf(v, 2 * n);
            }
            ts[n] = t;
            v[n] = value;
            n++;
        }

        /** The sizes of the steps between consecutive samples in time order; null if < 2. */
        double[] steps() {
            if (n < 2) {
                return null;
            }
            Integer[] order = new Integer[n];
            for (int i = 0; i < n; i++) {
                order[i] = i;
            }
            Arrays.sort(
                    order,
                    (a, b) -> ts[a] != ts[b] ? Long.compare(ts[a], ts[b]) : Double.compare(v[a], v[b]));
            double[] out = new double[n - 1];
            for (int i = 1; i < n; i++) {
                out[i - 1] = Math.abs(v[order[i]] - v[order[i - 1]]);
            }
            return out;
        }
    }

    /** The common part: accumulate and merge the samples. */
    public abstract static class Base extends AggregateFunction<Double, Acc> {
        private static final long serialVersionUID = 1L;

        @Override
        public Acc createAccumulator() {
            return new Acc();
        }

        public void accumulate(Acc acc, Long tsMs, Double value) {
            if (tsMs != null && value != null) {
                acc.add(tsMs, value);
            }
        }

        public void merge(Acc acc, Iterable<Acc> others) {
            for (Acc other : others) {
                for (int i = 0; i < other.n; i++) {
                    acc.add(other.ts[i], other.v[i]);
                }
            }
        }

        public void resetAccumulator(Acc acc) {
            acc.n = 0;
        }

        @Override
        public Double getValue(Acc acc) {
            double[] steps = acc.steps();
            return steps == null ? null : of(steps);
        }

        /** The figure of a window's steps (at least one). */
        abstract double of(double[] steps);
    }

    /** The largest step. */
    public static class Max extends Base {
        private static final long serialVersionUID = 1L;

        @Override
        double of(double[] steps) {
            return Arrays.stream(steps).max().orElse(0.0);
        }
    }

    /** The steps' root mean square. */
    public static class Rms extends Base {
        private static final long serialVersionUID = 1L;

        @Override
        double of(double[] steps) {
            return Math.sqrt(Arrays.stream(steps).map(d -> d * d).sum() / steps.length);
        }
    }
}

package local.anomaly.flink;

import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.table.functions.FunctionContext;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.WeakHashMap;

/**
 * A metric's steps within a window: the differences between its consecutive samples in time
 * order (common/features.py, STEP_AGGREGATES). {@code STEP_MAX(ts_ms, value, interval_ms)} is
 * the largest step in size, {@code STEP_RMS(ts_ms, value, interval_ms)} their root mean square;
 * both NULL for a window of fewer than two samples. A step between samples further apart than
 * the sampling interval ({@code interval_ms}, the catalogue's; 0 or NULL: none) counts at its
 * size over the square root of their distance in intervals: a step across one missing sample
 * at its size over √2, as a random walk's steps grow with the time between them. A step of
 * samples one interval apart or nearer counts at its size. Samples of one time are ordered by
 * value, so the result depends only on the window's samples, not on the order they came in:
 * the stream and the batch path (training) compute the same figure. NULL times or values are
 * left out.
 *
 * <p>The state is bounded: an accumulator holds at most {@link #BUFFER} samples. When its
 * buffer is full, it sorts it and folds the earliest {@link #FOLD} into a summary of the
 * window's earliest samples in time order (their first and last sample, and the largest step,
 * the sum of squared steps and the number of steps among them). Samples that come in time
 * order, or out of order by fewer than {@link #FOLD} samples, give the exact figure. A sample
 * that comes after a later one was folded cannot be placed: it is left out of the steps (the
 * window's other aggregates still count it), and so are an accumulator's folded samples that
 * overlap in time with another's it is merged with. Each function counts the samples it left
 * out in an operator metric ({@code stepMaxSamplesLeftOut}, {@code stepRmsSamplesLeftOut}: the
 * two read the same samples, so they count alike). A window operator opens a function once for
 * each of its aggregation handlers (local, global, state); they share one counter.
 *
 * <p>{@link MaxOfAll} and {@link RmsOfAll} keep every sample instead, for batch table
 * environments (training over history), whose input need not come in time order: their figure
 * never leaves a sample out.
 *
 * <p>Registered for Flink SQL in common/flink_env.py, in every table environment.
 */
public final class Steps {
    private Steps() {}

    /** The most samples an accumulator buffers. */
    public static final int BUFFER = 256;

    /** How many of the earliest buffered samples a full buffer folds into the summary. */
    public static final int FOLD = BUFFER / 2;

    /** The buffer of the batch functions: every sample. */
    static final int ALL = Integer.MAX_VALUE;

    /** The order of a window's samples: by time, then by value. */
    static int compare(long t1, double v1, long t2, double v2) {
        return t1 != t2 ? Long.compare(t1, t2) : Double.compare(v1, v2);
    }

    /** Whether sample (t1, v1) comes before (t2, v2) in that order. */
    static boolean before(long t1, double v1, long t2, double v2) {
        return compare(t1, v1, t2, v2) < 0;
    }

    /**
     * A window's samples: the folded summary of its earliest ones ({@code folded} samples,
     * none if 0) and the buffered rest, the first {@code n} of {@code ts} and {@code v}, in the
     * order they came in, none of them before the summary's last sample.
     */
    public static class Acc {
        /** The most samples this accumulator buffers: {@link #BUFFER}, or {@link #ALL}. */
        public int buffer = BUFFER;
        public long[] ts = new long[16];
        public double[] v = new double[16];
        public int n;
        public long folded;
        public long firstTs;
        public double firstV;
        public long lastTs;
        public double lastV;
        public double max;
        public double sumSq;
        /** The sampling interval the steps are read against (ms); 0: none. */
        public long interval;

        /** A step of {@code size} between samples {@code dt} ms apart, as it counts. */
        double counted(long dt, double size) {
            return interval > 0 && dt > interval ? size * Math.sqrt((double) interval / dt) : size;
        }

        /** Adds a sample; false if it is left out (see the class comment). */
        boolean add(long t, double value) {
            if (folded > 0 && before(t, value, lastTs, lastV)) {
                return false; // after a later sample was folded
            }
            if (n == ts.length) {
                ts = Arrays.copyOf(ts, 2 * n);
                v = Arrays.copyOf(v, 2 * n);
            }
            ts[n] = t;
            v[n] = value;
            n++;
            if (n == buffer) {
                sortBuffer();
                for (int i = 0; i < FOLD; i++) {
                    fold(ts[i], v[i]);
                }
                System.arraycopy(ts, FOLD, ts, 0, n - FOLD);
                System.arraycopy(v, FOLD, v, 0, n - FOLD);
                n -= FOLD;
            }
            return true;
        }

        /** Appends a sample, in time order, to the summary. */
        void fold(long t, double value) {
            if (folded == 0) {
                firstTs = t;
                firstV = value;
            } else {
                double step = counted(t - lastTs, Math.abs(value - lastV));
                max = Math.max(max, step);
                sumSq += step * step;
            }
            lastTs = t;
            lastV = value;
            folded++;
        }

        /** Appends another summary, all of whose samples come after this one's, to it. */
        void fold(Acc later) {
            fold(later.firstTs, later.firstV);
            max = Math.max(max, later.max);
            sumSq += later.sumSq;
            folded += later.folded - 1;
            lastTs = later.lastTs;
            lastV = later.lastV;
        }

        /** Sorts the buffered samples by time, then value. */
        void sortBuffer() {
            Integer[] order = new Integer[n];
            for (int i = 0; i < n; i++) {
                order[i] = i;
            }
            Arrays.sort(order, (a, b) -> compare(ts[a], v[a], ts[b], v[b]));
            long[] sortedTs = new long[ts.length];
            double[] sortedV = new double[v.length];
            for (int i = 0; i < n; i++) {
                sortedTs[i] = ts[order[i]];
                sortedV[i] = v[order[i]];
            }
            ts = sortedTs;
            v = sortedV;
        }

        /** A copy with every sample folded: the summary of the window's steps. */
        Acc summary() {
            Acc out = copy();
            out.sortBuffer();
            for (int i = 0; i < out.n; i++) {
                out.fold(out.ts[i], out.v[i]);
            }
            out.n = 0;
            return out;
        }

        Acc copy() {
            Acc out = new Acc();
            out.set(this);
            out.ts = Arrays.copyOf(ts, Math.max(16, n));
            out.v = Arrays.copyOf(v, Math.max(16, n));
            return out;
        }

        /** The index of the buffer's earliest (or latest) sample in time order; -1 if none. */
        int bufferEnd(boolean latest) {
            int at = n == 0 ? -1 : 0;
            for (int i = 1; i < n; i++) {
                if (latest ? before(ts[at], v[at], ts[i], v[i]) : before(ts[i], v[i], ts[at], v[at])) {
                    at = i;
                }
            }
            return at;
        }

        /** Whether every sample of this accumulator comes before every one of the other's. */
        boolean allBefore(Acc later) {
            int last = bufferEnd(true); // the buffer's samples all come after the summary's
            int first = later.bufferEnd(false);
            if ((last < 0 && folded == 0) || (first < 0 && later.folded == 0)) {
                return true;
            }
            long t = later.folded > 0 ? later.firstTs : later.ts[first];
            double value = later.folded > 0 ? later.firstV : later.v[first];
            return last >= 0 ? !before(t, value, ts[last], v[last]) : !before(t, value, lastTs, lastV);
        }

        /**
         * Merges another accumulator in. Where one's samples all come before the other's and
         * either has a summary, the two are chained; otherwise the other's buffered samples
         * are added one by one, and its folded ones are left out (see the class comment).
         *
         * @return how many of the other's samples were left out
         */
        long merge(Acc other) {
            interval = Math.max(interval, other.interval); // one catalogue's: the same
            if (other.folded > 0 && allBefore(other)) {
                set(chain(summary(), other));
                return 0;
            } else if ((folded > 0 || other.folded > 0) && other.allBefore(this)) {
                set(chain(other.summary(), this));
                return 0;
            }
            long leftOut = other.folded;
            for (int i = 0; i < other.n; i++) {
                if (!add(other.ts[i], other.v[i])) {
                    leftOut++;
                }
            }
            return leftOut;
        }

        /** A summary followed by an accumulator all of whose samples come after it. */
        private static Acc chain(Acc earlier, Acc later) {
            Acc out = earlier.copy();
            out.interval = Math.max(earlier.interval, later.interval);
            if (later.folded > 0) {
                out.fold(later);
            }
            for (int i = 0; i < later.n; i++) {
                out.add(later.ts[i], later.v[i]);
            }
            return out;
        }

        /** Takes the other's fields (its arrays themselves, not copies). */
        private void set(Acc other) {
            buffer = other.buffer;
            ts = other.ts;
            v = other.v;
            n = other.n;
            folded = other.folded;
            firstTs = other.firstTs;
            firstV = other.firstV;
            lastTs = other.lastTs;
            lastV = other.lastV;
            max = other.max;
            sumSq = other.sumSq;
            interval = other.interval;
        }
    }

    /** The common part: accumulate and merge the samples. */
    public abstract static class Base extends AggregateFunction<Double, Acc> {
        private static final long serialVersionUID = 1L;

        private final int buffer;

        /** The samples left out of the steps, an operator metric once opened. */
        private transient Counter leftOut;

        Base(int buffer) {
            this.buffer = buffer;
        }

        /** The counters registered, by metric group and name (see the class comment). */
        private static final Map<MetricGroup, Map<String, Counter>> COUNTERS = new WeakHashMap<>();

        @Override
        public void open(FunctionContext context) {
            MetricGroup group = context.getMetricGroup();
            synchronized (COUNTERS) {
                leftOut =
                        COUNTERS.computeIfAbsent(group, g -> new HashMap<>())
                                .computeIfAbsent(metricName(), group::counter);
            }
        }

        /** The name of the counter of samples left out. */
        abstract String metricName();

        /** Its counter's value: the samples left out where it was opened (0 if it was not). */
        public long samplesLeftOut() {
            return leftOut == null ? 0 : leftOut.getCount();
        }

        private void count(long samples) {
            if (leftOut != null && samples > 0) {
                leftOut.inc(samples);
            }
        }

        @Override
        public Acc createAccumulator() {
            Acc acc = new Acc();
            acc.buffer = buffer;
            return acc;
        }

        public void accumulate(Acc acc, Long tsMs, Double value, Long intervalMs) {
            if (intervalMs != null && intervalMs > 0) {
                acc.interval = intervalMs;
            }
            if (tsMs != null && value != null) {
                count(acc.add(tsMs, value) ? 0 : 1);
            }
        }

        public void merge(Acc acc, Iterable<Acc> others) {
            for (Acc other : others) {
                count(acc.merge(other));
            }
        }

        public void resetAccumulator(Acc acc) {
            acc.set(createAccumulator());
        }

        @Override
        public Double getValue(Acc acc) {
            Acc all = acc.summary();
            return all.folded < 2 ? null : of(all.max, all.sumSq / (all.folded - 1));
        }

        /** The figure of a window's steps, from the largest and their mean square. */
        abstract double of(double max, double meanSquare);
    }

    /** The largest step. */
    public static class Max extends Base {
        private static final long serialVersionUID = 1L;

        public Max() {
            this(BUFFER);
        }

        Max(int buffer) {
            super(buffer);
        }

        @Override
        String metricName() {
            return "stepMaxSamplesLeftOut";
        }

        @Override
        double of(double max, double meanSquare) {
            return max;
        }
    }

    /** The steps' root mean square. */
    public static class Rms extends Base {
        private static final long serialVersionUID = 1L;

        public Rms() {
            this(BUFFER);
        }

        Rms(int buffer) {
            super(buffer);
        }

        @Override
        String metricName() {
            return "stepRmsSamplesLeftOut";
        }

        @Override
        double of(double max, double meanSquare) {
            return Math.sqrt(meanSquare);
        }
    }

    /** The largest step, from every sample (batch). */
    public static class MaxOfAll extends Max {
        private static final long serialVersionUID = 1L;

        public MaxOfAll() {
            super(ALL);
        }
    }

    /** The steps' root mean square, from every sample (batch). */
    public static class RmsOfAll extends Rms {
        private static final long serialVersionUID = 1L;

        public RmsOfAll() {
            super(ALL);
        }
    }
}

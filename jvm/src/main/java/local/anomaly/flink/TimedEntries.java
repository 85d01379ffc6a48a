package local.anomaly.flink;

import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.streaming.api.TimerService;

/**
 * A device's recent entries (a time in ms, then {@code width - 1} values), oldest first, in one
 * {@code double[]} that a keyed operator keeps as its value state (WindowContext, RecentMax)
 * and changes in place: a new entry goes into room kept at the end, and dropping the oldest
 * only moves the start, so a window costs no new array and no copy of the device's history
 * (with a copy and a timer per window, a run of 10M events at 10k devices kept the
 * TaskManager's collector busy for 45 s of CPU; 8 s without). The heap state backend copies
 * the array before handing it out while a checkpoint still reads it, which is what makes
 * changing it in place safe there; RocksDB hands out a fresh copy each time.
 *
 * <p>Layout: {@code [TAG, start, count, entries...]}, entry {@code e} (0 = the oldest) at
 * {@code HEADER + (start + e) * width}. The arrays of the versions before (no header: the
 * entries from index 0, a time ≥ 0 first) are read by {@link #upgrade}, so a job moves onto
 * this version from their savepoints.
 */
public final class TimedEntries {
    private TimedEntries() {}

    /** The first element of this layout: no time (the first element before it) is negative. */
    static final double TAG = -1;

    static final int HEADER = 3;

    /** {@code entries} in this layout; an earlier version's array converted; null stays null. */
    public static double[] upgrade(double[] entries, int width) {
        if (entries == null || (entries.length > 0 && entries[0] == TAG)) {
            return entries;
        }
        int count = entries.length / width;
        double[] upgraded = allocate(count, width);
        System.arraycopy(entries, 0, upgraded, HEADER, count * width);
        upgraded[2] = count;
        return upgraded;
    }

    public static int count(double[] entries) {
        return entries == null ? 0 : (int) entries[2];
    }

    /** Where entry {@code e} (0 = the oldest) starts. */
    public static int offset(double[] entries, int e, int width) {
        return HEADER + ((int) entries[1] + e) * width;
    }

    /** The time of entry {@code e}. */
    public static long time(double[] entries, int e, int width) {
        return (long) entries[offset(entries, e, width)];
    }

    /** Drops the oldest entries whose time is before {@code from}. */
    public static void dropBefore(double[] entries, int width, long from) {
        if (entries == null) {
            return;
        }
        int count = count(entries);
        int dropped = 0;
        while (dropped < count && time(entries, dropped, width) < from) {
            dropped++;
        }
        entries[1] += dropped;
        entries[2] = count - dropped;
    }

    /**
     * {@code entries} (a new array if there was no room, or none) with one entry more at the
     * end, for the caller to fill from {@code offset(result, count(result) - 1, width)}.
     */
    public static double[] append(double[] entries, int width) {
        if (entries == null) {
            entries = allocate(0, width);
        }
        int start = (int) entries[1];
        int count = count(entries);
        int capacity = (entries.length - HEADER) / width;
        if (start + count == capacity) {
            double[] target = entries;
            if (4 * count > 3 * capacity) {
                // Three quarters full: grow by half, so that a device with a steady number of
                // entries moves them back to the start only once in a while.
                target = allocate(count + count / 2, width);
            }
            System.arraycopy(entries, offset(entries, 0, width), target, HEADER, count * width);
            target[1] = 0;
            target[2] = count;
            entries = target;
        }
        entries[2] = count + 1;
        return entries;
    }

    /**
     * A device's event-time timer at {@code timestamp}: clears its {@code state} if it has been
     * silent for {@code horizonMs} since its newest entry (nothing left that a later one could
     * read), else sets the timer again for then.
     */
    static void onTimer(
            ValueState<double[]> state,
            int width,
            long horizonMs,
            long timestamp,
            TimerService timers)
            throws java.io.IOException {
        double[] entries = upgrade(state.value(), width);
        int count = count(entries);
        long due = count == 0 ? Long.MIN_VALUE : time(entries, count - 1, width) + horizonMs;
        if (due <= timestamp) {
            state.clear();
        } else {
            timers.registerEventTimeTimer(due);
        }
    }

    private static double[] allocate(int count, int width) {
        double[] entries = new double[HEADER + Math.max(4, count + 1) * width];
        entries[0] = TAG;
        return entries;
    }
}

package local.anomaly.flink;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.utils.JoinedRowData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.util.Collector;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The context horizons of each window (sql/flink/window_context.sql), keyed by device: for
 * each tracked column (a metric's window mean, or its std) and horizon, the number of the
 * device's windows within the horizon up to and including this one that have a value, and the
 * sum and sum of squares of those values. The same figures as Flink's {@code COUNT/SUM OVER
 * (PARTITION BY device ORDER BY window_time RANGE BETWEEN horizon PRECEDING AND CURRENT
 * ROW)}, without keeping each window's whole row: only the tracked values of the longest
 * horizon's windows, per device.
 *
 * <p>A device's windows arrive in time order (the window operator emits them as the watermark
 * passes their end, keyed by the same device). The state is cleared when a device has been
 * silent for the longest horizon: by then no later window could read it (one event-time timer
 * per device, moved on while it sends; the versions before set one per window, which
 * a savepoint of theirs brings along and which still fire and clear as they did).
 */
public class WindowContext extends KeyedProcessFunction<String, RowData, RowData> {
    private static final long serialVersionUID = 1L;

    private final int timeField;
    private final int[] trackedFields;
    /** Per output triple (n, sum, sumsq): which tracked value, over which horizon (ms). */
    private final int[] outputTracked;
    private final long[] outputHorizonMs;
    private final long longestMs;
    private final RowData.FieldGetter[] getters;

    /**
     * Per entry: the window's time (ms), then its tracked values (NaN: none), oldest first
     * (TimedEntries).
     */
    private transient ValueState<double[]> entries;

    WindowContext(
            RowType row, int timeField, int[] trackedFields, int[] outputTracked, long[] horizonsMs) {
        this.timeField = timeField;
        this.trackedFields = trackedFields;
        this.outputTracked = outputTracked;
        this.outputHorizonMs = horizonsMs;
        this.longestMs = Arrays.stream(horizonsMs).max().orElse(0L);
        this.getters = new RowData.FieldGetter[trackedFields.length];
        for (int k = 0; k < trackedFields.length; k++) {
            getters[k] = RowData.createFieldGetter(row.getTypeAt(trackedFields[k]), trackedFields[k]);
        }
    }

    /**
     * {@code windows} with, for each i, three columns more: {@code names[3i]} (BIGINT NOT
     * NULL), {@code names[3i+1]} and {@code names[3i+2]} (DOUBLE): the count, sum and sum of
     * squares of the DOUBLE column {@code columns[i]} over the device's windows in {@code
     * horizonsMs[i]} before and including each one. The result's rowtime is {@code time} (the
     * windows' TIMESTAMP_LTZ(3) rowtime), with the upstream watermarks. Called from Python
     * (jobs/score_telemetry.py).
     */
    public static Table apply(
            StreamTableEnvironment tEnv,
            Table windows,
            String device,
            String time,
            String[] columns,
            long[] horizonsMs,
            String[] names) {
        if (columns.length != horizonsMs.length || names.length != 3 * columns.length) {
            throw new IllegalArgumentException(
                    "WindowContext: one horizon and three names per column");
        }
        DataType inType = windows.getResolvedSchema().toPhysicalRowDataType();
        RowType inRow = (RowType) inType.getLogicalType();
        int timeField = field(inRow, time);
        if (inRow.getTypeAt(timeField).getTypeRoot()
                != LogicalTypeRoot.TIMESTAMP_WITH_LOCAL_TIME_ZONE) {
            throw new IllegalArgumentException("WindowContext: " + time + " is not TIMESTAMP_LTZ");
        }
        List<Integer> tracked = new ArrayList<>();
        int[] outputTracked = new int[columns.length];
        for (int i = 0; i < columns.length; i++) {
            int f = field(inRow, columns[i]);
            if (inRow.getTypeAt(f).getTypeRoot() != LogicalTypeRoot.DOUBLE) {
                throw new IllegalArgumentException("WindowContext: " + columns[i] + " is not DOUBLE");
            }
            if (!tracked.contains(f)) {
                tracked.add(f);
            }
            outputTracked[i] = tracked.indexOf(f);
        }
        List<DataTypes.Field> fields = Tables.fieldsOf(inType);
        for (int i = 0; i < columns.length; i++) {
            fields.add(DataTypes.FIELD(names[3 * i], DataTypes.BIGINT().notNull()));
            fields.add(DataTypes.FIELD(names[3 * i + 1], DataTypes.DOUBLE()));
            fields.add(DataTypes.FIELD(names[3 * i + 2], DataTypes.DOUBLE()));
        }
        DataType outType = DataTypes.ROW(fields).notNull().bridgedTo(RowData.class);
        int deviceField = field(inRow, device);
        DataStream<RowData> in = tEnv.toDataStream(windows, inType.bridgedTo(RowData.class));
        DataStream<RowData> out =
                in.keyBy(CounterRates.byDevice(deviceField))
                        .process(
                                new WindowContext(
                                        inRow,
                                        timeField,
                                        tracked.stream().mapToInt(Integer::intValue).toArray(),
                                        outputTracked,
                                        horizonsMs.clone()),
                                InternalTypeInfo.of(outType.getLogicalType()))
                        .name("window context (keyed by device)");
        return Tables.withRowtime(tEnv, out, outType, time);
    }

    private static int field(RowType row, String name) {
        return Tables.field(row, name, "WindowContext");
    }

    @Override
    public void open(OpenContext context) {
        entries =
                getRuntimeContext()
                        .getState(
                                new ValueStateDescriptor<>(
                                        "window-context",
                                        PrimitiveArrayTypeInfo.DOUBLE_PRIMITIVE_ARRAY_TYPE_INFO));
    }

    @Override
    public void processElement(RowData row, Context ctx, Collector<RowData> out) throws Exception {
        long time = row.getTimestamp(timeField, 3).getMillisecond();
        int width = 1 + trackedFields.length;
        double[] kept = TimedEntries.upgrade(entries.value(), width);
        if (kept == null) {
            // One timer per device at a time (onTimer sets the next), not one per window.
            ctx.timerService().registerEventTimeTimer(time + longestMs);
        }
        // Drop what no window from this one on can read: older than the longest horizon.
        TimedEntries.dropBefore(kept, width, time - longestMs);
        kept = TimedEntries.append(kept, width);
        int n = TimedEntries.count(kept);
        int own = TimedEntries.offset(kept, n - 1, width);
        kept[own] = time;
        for (int k = 0; k < trackedFields.length; k++) {
            Object value = getters[k].getFieldOrNull(row);
            kept[own + 1 + k] = value == null ? Double.NaN : (Double) value;
        }
        entries.update(kept);

        int base = TimedEntries.offset(kept, 0, width);
        GenericRowData sums = new GenericRowData(3 * outputTracked.length);
        for (int i = 0; i < outputTracked.length; i++) {
            long from = time - outputHorizonMs[i];
            int k = 1 + outputTracked[i];
            long seen = 0;
            double sum = 0;
            double squares = 0;
            for (int e = n - 1; e >= 0 && (long) kept[base + e * width] >= from; e--) {
                double v = kept[base + e * width + k];
                if (!Double.isNaN(v)) {
                    seen++;
                    sum += v;
                    squares += v * v;
                }
            }
            sums.setField(3 * i, seen);
            sums.setField(3 * i + 1, seen == 0 ? null : sum);
            sums.setField(3 * i + 2, seen == 0 ? null : squares);
        }
        out.collect(new JoinedRowData(row, sums));
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<RowData> out)
            throws Exception {
        // Silent for the longest horizon since its newest entry: cleared.
        TimedEntries.onTimer(entries, 1 + trackedFields.length, longestMs, timestamp, ctx.timerService());
    }
}

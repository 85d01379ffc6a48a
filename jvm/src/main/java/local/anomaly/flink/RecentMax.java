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

import java.util.List;

/**
 * The highest value of a column over each device's rows of the last {@code horizonMs} of event
 * time, this row's included (sql/flink/insert_health.sql: device health). The same figure as
 * Flink's {@code MAX(value) OVER (PARTITION BY device ORDER BY time RANGE BETWEEN horizon
 * PRECEDING AND CURRENT ROW)}, at the row's arrival instead of behind the watermark, and
 * without that OVER's per-row state and timers: each device keeps the times and values of its
 * rows within the horizon in one array.
 *
 * <p>A device's rows arrive in time order, one per time (scored windows, keyed by the same
 * device upstream). The state is cleared when a device has been silent for the horizon (one
 * event-time timer per device, moved on while it sends).
 */
public class RecentMax extends KeyedProcessFunction<String, RowData, RowData> {
    private static final long serialVersionUID = 1L;

    private final int timeField;
    private final int valueField;
    private final long horizonMs;

    /**
     * Per row within the horizon: its time (ms), then its value (NaN: NULL), oldest first
     * (TimedEntries).
     */
    private transient ValueState<double[]> entries;

    RecentMax(int timeField, int valueField, long horizonMs) {
        this.timeField = timeField;
        this.valueField = valueField;
        this.horizonMs = horizonMs;
    }

    /**
     * {@code rows} with one column more, {@code name} (DOUBLE): the highest non-NULL {@code
     * value} of the device's rows from {@code horizonMs} before this one's {@code time} up to
     * it (NULL if none). {@code time} is the TIMESTAMP_LTZ(3) rowtime, kept with the upstream
     * watermarks. Called from Python (jobs/score_telemetry.py).
     */
    public static Table apply(
            StreamTableEnvironment tEnv,
            Table rows,
            String device,
            String time,
            String value,
            long horizonMs,
            String name) {
        DataType inType = rows.getResolvedSchema().toPhysicalRowDataType();
        RowType inRow = (RowType) inType.getLogicalType();
        int timeField = Tables.field(inRow, time, "RecentMax");
        int valueField = Tables.field(inRow, value, "RecentMax");
        if (inRow.getTypeAt(timeField).getTypeRoot()
                        != LogicalTypeRoot.TIMESTAMP_WITH_LOCAL_TIME_ZONE
                || inRow.getTypeAt(valueField).getTypeRoot() != LogicalTypeRoot.DOUBLE) {
            throw new IllegalArgumentException(
                    "RecentMax: " + time + " must be TIMESTAMP_LTZ and " + value + " DOUBLE");
        }
        List<DataTypes.Field> fields = Tables.fieldsOf(inType);
        fields.add(DataTypes.FIELD(name, DataTypes.DOUBLE()));
        DataType outType = DataTypes.ROW(fields).notNull().bridgedTo(RowData.class);
        DataStream<RowData> in = tEnv.toDataStream(rows, inType.bridgedTo(RowData.class));
        DataStream<RowData> out =
                in.keyBy(CounterRates.byDevice(Tables.field(inRow, device, "RecentMax")))
                        .process(
                                new RecentMax(timeField, valueField, horizonMs),
                                InternalTypeInfo.of(outType.getLogicalType()))
                        .name("recent max of " + value + " (keyed by device)");
        return Tables.withRowtime(tEnv, out, outType, time);
    }

    @Override
    public void open(OpenContext context) {
        entries =
                getRuntimeContext()
                        .getState(
                                new ValueStateDescriptor<>(
                                        "recent-max", PrimitiveArrayTypeInfo.DOUBLE_PRIMITIVE_ARRAY_TYPE_INFO));
    }

    @Override
    public void processElement(RowData row, Context ctx, Collector<RowData> out) throws Exception {
        long time = row.getTimestamp(timeField, 3).getMillisecond();
        double[] kept = TimedEntries.upgrade(entries.value(), 2);
        if (kept == null) {
            // One timer per device at a time (onTimer sets the next), not one per row.
            ctx.timerService().registerEventTimeTimer(time + horizonMs);
        }
        // What no row from this one on can read: older than the horizon.
        TimedEntries.dropBefore(kept, 2, time - horizonMs);
        kept = TimedEntries.append(kept, 2);
        int n = TimedEntries.count(kept);
        int own = TimedEntries.offset(kept, n - 1, 2);
        kept[own] = time;
        kept[own + 1] = row.isNullAt(valueField) ? Double.NaN : row.getDouble(valueField);
        entries.update(kept);
        double max = Double.NaN;
        for (int e = TimedEntries.offset(kept, 0, 2) + 1; e <= own + 1; e += 2) {
            if (!Double.isNaN(kept[e]) && (Double.isNaN(max) || kept[e] > max)) {
                max = kept[e];
            }
        }
        out.collect(new JoinedRowData(row, GenericRowData.of(Double.isNaN(max) ? null : max)));
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<RowData> out)
            throws Exception {
        // Silent for the horizon since its newest entry: cleared.
        TimedEntries.onTimer(entries, 2, horizonMs, timestamp, ctx.timerService());
    }
}

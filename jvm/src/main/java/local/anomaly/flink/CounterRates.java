package local.anomaly.flink;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.metrics.Counter;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.util.Collector;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Counters (running totals: bytes sent, packets, CPU time) become rates per second, per device
 * and metric, in event time: a point's rate is its increase over the device's previous point of
 * that counter, divided by the seconds between them. Runs keyed by device (the job keys the
 * agents' points itself: an agent keys its messages at random, so one device's points arrive
 * through several partitions, in no set order). Rows with counters wait in keyed state until
 * the watermark reaches their time and are then taken in time order, so the rates are those of
 * the points sorted by time, whatever order they came in; a restore resumes exactly. (Rows
 * without counters, and rejected ones, pass at once.)
 *
 * <ul>
 *   <li>A series' first point gives no rate: its value is the base of the next (the metric is
 *       NULL in that row; counted in {@code counterBaselines}).
 *   <li>A total below the previous one is a reset (an agent or a device restarted): the
 *       increase is the new total, counted from zero (as Prometheus' rate() takes it; counted
 *       in {@code counterResets}).
 *   <li>A point not newer than the previous one (a second point at the same time, or one that
 *       came after the watermark had passed it) gives no rate (NULL; counted in {@code
 *       counterPointsNotNewer}): the total at a later time is already known.
 * </ul>
 *
 * Rows with a reject reason pass unchanged.
 */
public class CounterRates extends KeyedProcessFunction<String, RowData, RowData> {
    private static final long serialVersionUID = 1L;

    private final int rejectField;
    private final int timeField;
    private final int[] counterFields;
    private final RowData.FieldGetter[] getters;
    private final RowType rowType;

    private transient ValueState<long[]> times;
    private transient ValueState<double[]> totals;
    /** Rows with counters waiting for the watermark, by their time. */
    private transient MapState<Long, List<RowData>> waiting;
    private transient Counter baselines;
    private transient Counter resets;
    private transient Counter notNewer;

    CounterRates(RowType row, int rejectField, int timeField, int[] counterFields) {
        this.rejectField = rejectField;
        this.timeField = timeField;
        this.counterFields = counterFields;
        this.rowType = row;
        this.getters = new RowData.FieldGetter[row.getFieldCount()];
        for (int i = 0; i < getters.length; i++) {
            getters[i] = RowData.createFieldGetter(row.getTypeAt(i), i);
        }
    }

    /** The key: the device id ("" for a row without one, a dead letter). */
    static KeySelector<RowData, String> byDevice(int deviceField) {
        return row -> row.isNullAt(deviceField) ? "" : row.getString(deviceField).toString();
    }

    @Override
    public void open(OpenContext context) {
        times =
                getRuntimeContext()
                        .getState(
                                new ValueStateDescriptor<>(
                                        "counter-times", PrimitiveArrayTypeInfo.LONG_PRIMITIVE_ARRAY_TYPE_INFO));
        totals =
                getRuntimeContext()
                        .getState(
                                new ValueStateDescriptor<>(
                                        "counter-totals", PrimitiveArrayTypeInfo.DOUBLE_PRIMITIVE_ARRAY_TYPE_INFO));
        waiting =
                getRuntimeContext()
                        .getMapState(
                                new MapStateDescriptor<>(
                                        "counter-rows",
                                        Types.LONG,
                                        Types.LIST(InternalTypeInfo.of(rowType))));
        baselines = getRuntimeContext().getMetricGroup().counter("counterBaselines");
        resets = getRuntimeContext().getMetricGroup().counter("counterResets");
        notNewer = getRuntimeContext().getMetricGroup().counter("counterPointsNotNewer");
    }

    @Override
    public void processElement(RowData row, Context context, Collector<RowData> out)
            throws Exception {
        if (!row.isNullAt(rejectField) || row.isNullAt(timeField)) {
            out.collect(row);
            return;
        }
        boolean any = false;
        for (int field : counterFields) {
            any |= !row.isNullAt(field);
        }
        if (!any) {
            out.collect(row);
            return;
        }
        long time = row.getLong(timeField);
        List<RowData> rows = waiting.get(time);
        if (rows == null) {
            rows = new ArrayList<>();
            context.timerService().registerEventTimeTimer(time);
        }
        rows.add(copy(row));
        waiting.put(time, rows);
    }

    @Override
    public void onTimer(long time, OnTimerContext context, Collector<RowData> out)
            throws Exception {
        List<RowData> rows = waiting.get(time);
        if (rows == null) {
            return;
        }
        waiting.remove(time);
        long[] lastTimes = times.value();
        double[] lastTotals = totals.value();
        if (lastTimes == null) {
            lastTimes = new long[counterFields.length];
            Arrays.fill(lastTimes, Long.MIN_VALUE);
            lastTotals = new double[counterFields.length];
        }
        for (RowData waited : rows) {
            GenericRowData row = copy(waited);
            rate(row, time, lastTimes, lastTotals);
            out.collect(row);
        }
        times.update(lastTimes);
        totals.update(lastTotals);
    }

    private GenericRowData copy(RowData row) {
        GenericRowData copy = new GenericRowData(row.getRowKind(), getters.length);
        for (int i = 0; i < getters.length; i++) {
            copy.setField(i, getters[i].getFieldOrNull(row));
        }
        return copy;
    }

    /** Replaces each counter's total in {@code row} by its rate (NULL: none). */
    private void rate(GenericRowData row, long time, long[] lastTimes, double[] lastTotals) {
        for (int k = 0; k < counterFields.length; k++) {
            int field = counterFields[k];
            if (row.isNullAt(field)) {
                continue;
            }
            double total = row.getDouble(field);
            Double rate = null;
            if (lastTimes[k] == Long.MIN_VALUE) {
                baselines.inc();
            } else if (time <= lastTimes[k]) {
                notNewer.inc();
                row.setField(field, null);
                continue;
            } else {
                double increase = total - lastTotals[k];
                if (increase < 0) {
                    resets.inc();
                    increase = total;
                }
                rate = increase / ((time - lastTimes[k]) / 1000.0);
            }
            row.setField(field, rate);
            lastTimes[k] = time;
            lastTotals[k] = total;
        }
    }
}

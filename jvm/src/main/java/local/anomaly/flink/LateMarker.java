package local.anomaly.flink;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.data.utils.JoinedRowData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.RowType;

import java.util.List;

/**
 * Marks each event late when its tumbling window has closed: when the window's last
 * millisecond is at or below the watermark. It runs before the window operator, whose
 * watermark is never ahead of this one, so an event marked on time is never dropped there.
 *
 * <p>The watermark it judges by survives a restore. Flink does not restore watermarks: after a
 * restart the window operator's watermark starts from nothing, and an event for a window that
 * was already written could reopen it and overwrite its row with a partial one. This operator
 * checkpoints the watermark it has seen and, after a restore, judges by the least of the
 * restored ones (every window written before the checkpoint ended at or below it) until the
 * stream's own watermark passes it. A window written after the checkpoint is written again
 * from the replayed events, whole.
 *
 * <p>It works on Flink's internal rows and adds two fields to each: late (BOOLEAN), and the
 * watermark the event met (TIMESTAMP_LTZ(3), NULL before the first one). An event without a
 * valid time (NULL) is never late: it is a dead letter.
 */
public class LateMarker extends AbstractStreamOperator<RowData>
        implements OneInputStreamOperator<RowData, RowData> {
    private static final long serialVersionUID = 1L;

    private final int timeField;
    private final long windowMs;

    private transient ListState<Long> saved;
    private long watermark = Long.MIN_VALUE;
    /** The watermark as the column shows it (NULL before the first): made when it moves. */
    private transient TimestampData watermarkMet;

    LateMarker(int timeField, long windowMs) {
        this.timeField = timeField;
        this.windowMs = windowMs;
    }

    /**
     * {@code events} with two columns more, {@code late} (BOOLEAN NOT NULL) and {@code
     * watermark} (TIMESTAMP_LTZ(3), the watermark the event met), as a table whose rowtime is
     * {@code time} (a TIMESTAMP_LTZ(3) column of {@code events}, NULL for an event without a
     * valid time) with the source's watermarks. Rows cross as Flink's internal rows: nothing is
     * converted on the way. Called from Python (jobs/score_telemetry.py).
     */
    public static Table mark(
            StreamTableEnvironment tEnv,
            Table events,
            String time,
            String late,
            String watermark,
            long windowMs) {
        return mark(tEnv, events, time, late, watermark, windowMs, null, null, null, new String[0]);
    }

    /**
     * As above, with the counters' running totals turned into rates first ({@link
     * CounterRates}, keyed by the column {@code device}; {@code reject}: the reject reason,
     * {@code timeMs}: the event's time in ms). Without counters nothing is keyed here.
     */
    public static Table mark(
            StreamTableEnvironment tEnv,
            Table events,
            String time,
            String late,
            String watermark,
            long windowMs,
            String device,
            String reject,
            String timeMs,
            String[] counters) {
        DataType inType = events.getResolvedSchema().toPhysicalRowDataType();
        RowType inRow = (RowType) inType.getLogicalType();
        int timeField = inRow.getFieldNames().indexOf(time);
        if (timeField < 0
                || inRow.getTypeAt(timeField).getTypeRoot()
                        != LogicalTypeRoot.TIMESTAMP_WITH_LOCAL_TIME_ZONE) {
            throw new IllegalArgumentException(
                    "LateMarker: no TIMESTAMP_LTZ column " + time + " in " + inRow);
        }
        List<DataTypes.Field> fields = Tables.fieldsOf(inType);
        fields.add(DataTypes.FIELD(late, DataTypes.BOOLEAN().notNull()));
        fields.add(DataTypes.FIELD(watermark, DataTypes.TIMESTAMP_LTZ(3)));
        DataType outType = DataTypes.ROW(fields).notNull().bridgedTo(RowData.class);
        DataStream<RowData> in = tEnv.toDataStream(events, inType.bridgedTo(RowData.class));
        if (counters.length > 0) {
            int[] counterFields = new int[counters.length];
            for (int k = 0; k < counters.length; k++) {
                counterFields[k] = field(inRow, counters[k]);
            }
            in =
                    in.keyBy(CounterRates.byDevice(field(inRow, device)))
                            .process(
                                    new CounterRates(
                                            inRow, field(inRow, reject), field(inRow, timeMs), counterFields),
                                    InternalTypeInfo.of(inRow))
                            .name("counter rates (keyed by device)");
        }
        DataStream<RowData> out =
                in.transform(
                        "late events (watermark kept over restores)",
                        InternalTypeInfo.of(outType.getLogicalType()),
                        new LateMarker(timeField, windowMs));
        return Tables.withRowtime(tEnv, out, outType, time);
    }

    private static int field(RowType row, String name) {
        return Tables.field(row, name, "LateMarker");
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        saved =
                context.getOperatorStateStore()
                        .getUnionListState(new ListStateDescriptor<>("watermark", Types.LONG));
        if (context.isRestored()) {
            long least = Long.MAX_VALUE;
            for (Long w : saved.get()) {
                least = Math.min(least, w);
            }
            advance(least == Long.MAX_VALUE ? Long.MIN_VALUE : least);
        }
    }

    private void advance(long to) {
        if (to > watermark) {
            watermark = to;
            watermarkMet = TimestampData.fromEpochMillis(to);
        }
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
        super.snapshotState(context);
        saved.clear();
        saved.add(watermark);
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        advance(mark.getTimestamp());
        super.processWatermark(mark);
    }

    @Override
    public void processElement(StreamRecord<RowData> record) throws Exception {
        RowData row = record.getValue();
        boolean late = false;
        if (!row.isNullAt(timeField) && watermark != Long.MIN_VALUE) {
            long ms = row.getTimestamp(timeField, 3).getMillisecond();
            late = ms - Math.floorMod(ms, windowMs) + windowMs - 1 <= watermark;
        }
        GenericRowData marks = GenericRowData.of(late, watermarkMet);
        output.collect(record.replace(new JoinedRowData(row, marks)));
    }
}

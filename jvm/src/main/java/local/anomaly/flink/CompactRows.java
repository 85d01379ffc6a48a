package local.anomaly.flink;

import org.apache.flink.api.common.io.InputFormat;
import org.apache.flink.api.common.io.RichInputFormat;
import org.apache.flink.api.common.io.statistics.BaseStatistics;
import org.apache.flink.api.common.functions.RuntimeContext;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.io.InputSplit;
import org.apache.flink.core.io.InputSplitAssigner;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
import org.apache.flink.table.types.logical.RowType;

import java.io.IOException;

/**
 * A table scan's rows as binary rows: one byte array each, for a cache that holds a whole table.
 *
 * <p>The JDBC scan gives each row as a GenericRowData whose strings keep both the Java String
 * and its UTF-8 bytes, each byte array behind a memory segment of its own: about 2 KB of heap a
 * row of the devices table in a full lookup cache. A binary row holds its fields in one array.
 * The cache loader copies each row it is given, so the serializer's reused row is safe to
 * return here.
 */
final class CompactRows extends RichInputFormat<RowData, InputSplit> {

    private static final long serialVersionUID = 1L;

    private final InputFormat<RowData, InputSplit> scan;
    private final RowDataSerializer serializer;

    @SuppressWarnings("unchecked")
    CompactRows(InputFormat<RowData, ?> scan, RowType rowType) {
        this.scan = (InputFormat<RowData, InputSplit>) scan;
        this.serializer = new RowDataSerializer(rowType);
    }

    @Override
    public void setRuntimeContext(RuntimeContext context) {
        super.setRuntimeContext(context);
        if (scan instanceof RichInputFormat) {
            ((RichInputFormat<?, ?>) scan).setRuntimeContext(context);
        }
    }

    @Override
    public void openInputFormat() throws IOException {
        if (scan instanceof RichInputFormat) {
            ((RichInputFormat<?, ?>) scan).openInputFormat();
        }
    }

    @Override
    public void closeInputFormat() throws IOException {
        if (scan instanceof RichInputFormat) {
            ((RichInputFormat<?, ?>) scan).closeInputFormat();
        }
    }

    @Override
    public void configure(Configuration parameters) {
        scan.configure(parameters);
    }

    @Override
    public BaseStatistics getStatistics(BaseStatistics cached) throws IOException {
        return scan.getStatistics(cached);
    }

    @Override
    public InputSplit[] createInputSplits(int minNumSplits) throws IOException {
        return scan.createInputSplits(minNumSplits);
    }

    @Override
    public InputSplitAssigner getInputSplitAssigner(InputSplit[] splits) {
        return scan.getInputSplitAssigner(splits);
    }

    @Override
    public void open(InputSplit split) throws IOException {
        scan.open(split);
    }

    @Override
    public boolean reachedEnd() throws IOException {
        return scan.reachedEnd();
    }

    @Override
    public RowData nextRecord(RowData reuse) throws IOException {
        RowData row = scan.nextRecord(reuse);
        return row == null ? null : serializer.toBinaryRow(row);
    }

    @Override
    public void close() throws IOException {
        scan.close();
    }
}

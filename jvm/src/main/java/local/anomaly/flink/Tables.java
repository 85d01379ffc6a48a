package local.anomaly.flink;

import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.Schema;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.RowType;

import java.util.ArrayList;
import java.util.List;

/** What the operators that cross from a table to a DataStream and back share. */
final class Tables {
    private Tables() {}

    /** The index of the column {@code name}; {@code who} names the caller in the error. */
    static int field(RowType row, String name, String who) {
        int index = row.getFieldNames().indexOf(name);
        if (index < 0) {
            throw new IllegalArgumentException(who + ": no column " + name + " in " + row);
        }
        return index;
    }

    /** The fields of the row type {@code rowType}, to which an operator adds its columns. */
    static List<DataTypes.Field> fieldsOf(DataType rowType) {
        List<DataTypes.Field> fields = new ArrayList<>();
        List<String> names = ((RowType) rowType.getLogicalType()).getFieldNames();
        List<DataType> types = rowType.getChildren();
        for (int i = 0; i < names.size(); i++) {
            fields.add(DataTypes.FIELD(names.get(i), types.get(i)));
        }
        return fields;
    }

    /**
     * A stream of internal rows of type {@code rowType} as a table whose rowtime is the column
     * {@code time}, with the upstream watermarks.
     */
    static Table withRowtime(
            StreamTableEnvironment tEnv, DataStream<RowData> rows, DataType rowType, String time) {
        return tEnv.fromDataStream(
                rows,
                Schema.newBuilder()
                        .fromRowDataType(rowType)
                        .watermark(time, "SOURCE_WATERMARK()")
                        .build());
    }
}

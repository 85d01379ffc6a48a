package local.anomaly.flink;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.metrics.groups.UnregisteredMetricsGroup;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.util.Collector;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The telemetry-json format's CPU per message beside Flink's own JSON format (the bare engine's:
 * typed device_id, ts_ms and metrics), on the same messages, in one JVM (bench/format.py).
 *
 * <pre>
 * java -cp PYFLINK_JARS:anomaly-flink.jar local.anomaly.flink.FormatBench \
 *     MESSAGES METRIC,METRIC,... LIMITS MAX_DEVICE_ID_LENGTH ROUNDS
 * </pre>
 *
 * <p>MESSAGES: a file of flat JSON messages, one a line. Each round deserializes every message
 * with one format, then with the other; standard output, one JSON object per round: {@code
 * {"round": r, "ours_ns": ns a message, "flink_json_ns": ns a message, "rows": rows ours
 * emitted}}.
 */
public final class FormatBench {
    private FormatBench() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 5) {
            System.err.println(
                    "usage: FormatBench MESSAGES METRIC,METRIC,... LIMITS MAX_DEVICE_ID_LENGTH ROUNDS");
            System.exit(2);
        }
        List<byte[]> messages = new ArrayList<>();
        for (String line : Files.readAllLines(Paths.get(args[0]), StandardCharsets.UTF_8)) {
            if (!line.isEmpty()) {
                messages.add(line.getBytes(StandardCharsets.UTF_8));
            }
        }
        List<String> metrics = Arrays.asList(args[1].split(","));
        RowType ours = FormatCheck.rowType(metrics);
        TelemetryJsonDeserializer telemetry =
                new TelemetryJsonDeserializer(
                        ours,
                        InternalTypeInfo.of(ours),
                        MetricLimit.parseAll(args[2]),
                        Integer.parseInt(args[3]),
                        "flat",
                        AgentMapping.parse(""),
                        "");
        FormatCheck.open(telemetry, new UnregisteredMetricsGroup());
        DeserializationSchema<RowData> flinkJson = flinkJson(metrics);
        FormatCheck.open(flinkJson, new UnregisteredMetricsGroup());

        Count count = new Count();
        int rounds = Integer.parseInt(args[4]);
        for (int round = 0; round < rounds; round++) {
            count.rows = 0;
            long start = System.nanoTime();
            for (byte[] message : messages) {
                telemetry.deserialize(message, count);
            }
            long middle = System.nanoTime();
            long rows = count.rows;
            for (byte[] message : messages) {
                flinkJson.deserialize(message, count);
            }
            long end = System.nanoTime();
            System.out.printf(
                    "{\"round\": %d, \"ours_ns\": %.1f, \"flink_json_ns\": %.1f, \"rows\": %d}%n",
                    round,
                    (middle - start) / (double) messages.size(),
                    (end - middle) / (double) messages.size(),
                    rows);
        }
        System.out.flush();
    }

    /**
     * Flink's JSON format as the bare engine reads the topic ('format' = 'json', its parser-based
     * decoder, parse errors skipped): device_id STRING, ts_ms BIGINT, the metrics DOUBLE. By
     * reflection: flink-json is on the classpath of a Flink installation, not of this build.
     */
    @SuppressWarnings("unchecked")
    private static DeserializationSchema<RowData> flinkJson(List<String> metrics)
            throws ReflectiveOperationException {
        // Our row's first fields: device_id, ts_ms and the metrics.
        RowType type =
                new RowType(FormatCheck.rowType(metrics).getFields().subList(0, 2 + metrics.size()));
        Class<?> format = Class.forName("org.apache.flink.formats.common.TimestampFormat");
        Object sql = format.getField("SQL").get(null);
        return (DeserializationSchema<RowData>)
                Class.forName("org.apache.flink.formats.json.JsonParserRowDataDeserializationSchema")
                        .getConstructor(
                                RowType.class, TypeInformation.class, boolean.class, boolean.class, format)
                        .newInstance(type, InternalTypeInfo.of(type), false, true, sql);
    }

    /** Counts the rows a format emits, reading one field of each so that none is optimised away. */
    private static final class Count implements Collector<RowData> {
        long rows;

        @Override
        public void collect(RowData row) {
            if (!row.isNullAt(0)) {
                rows++;
            }
        }

        @Override
        public void close() {}
    }
}

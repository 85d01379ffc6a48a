package local.anomaly.flink;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.SimpleCounter;
import org.apache.flink.metrics.groups.UnregisteredMetricsGroup;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.util.Collector;
import org.apache.flink.util.UserCodeClassLoader;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The telemetry-json format on the command line, without a cluster: messages in, the rows the
 * format emits for them out (tests/unit/test_agent_formats.py).
 *
 * <pre>
 * java -cp PYFLINK_JARS:anomaly-flink.jar local.anomaly.flink.FormatCheck \
 *     INPUT MAPPING_JSON DEVICE_FIELD METRIC,METRIC,... [LIMITS]
 * </pre>
 *
 * <p>INPUT: flat, collectd, telegraf or otlp; MAPPING_JSON: {@link AgentMapping}'s JSON (may be
 * empty for flat); DEVICE_FIELD: the Telegraf tag or OTLP resource attribute naming the device;
 * the metric names: the DOUBLE columns, in order; LIMITS: {@link MetricLimit#parseAll}'s text.
 * The row type is device_id STRING, ts_ms BIGINT, the metrics, event_problem STRING,
 * value_problem STRING, payload BYTES, event_ts TIMESTAMP_LTZ(3).
 *
 * <p>Standard input: one message per line, as a JSON value: a string (the message is its text
 * in UTF-8, so it may hold newlines), {@code null} (a null message) or {@code {"base64": "..."}}
 * (the message's exact bytes). Blank lines are skipped. Standard output, one JSON object per
 * line: per row the format emits, {@code {"message": i, "device_id", "ts_ms", "event_ts" (its
 * epoch milliseconds or null), "metrics": {name: value or null}, "problem": event_problem or
 * else value_problem or null, "event_problem", "value_problem", "payload": the payload as UTF-8
 * text or null}}; after each message's rows,
 * {@code {"message": i, "counters": {"pointsKept": n, "pointsIgnored": n}}} (the counters the
 * message added; zero for flat). Messages count from 0.
 */
public final class FormatCheck {
    private FormatCheck() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 4 || args.length > 5) {
            System.err.println(
                    "usage: FormatCheck INPUT MAPPING_JSON DEVICE_FIELD METRIC,METRIC,... [LIMITS]"
                            + " < messages (one JSON string per line)");
            System.exit(2);
        }
        String input = args[0];
        AgentMapping mapping = AgentMapping.parse(args[1]);
        String deviceField = args[2];
        List<String> metrics = new ArrayList<>();
        for (String name : args[3].split(",")) {
            if (!name.trim().isEmpty()) {
                metrics.add(name.trim());
            }
        }
        Map<String, MetricLimit> limits = MetricLimit.parseAll(args.length == 5 ? args[4] : "");

        RowType rowType = rowType(metrics);
        TelemetryJsonDeserializer deserializer =
                new TelemetryJsonDeserializer(
                        rowType, InternalTypeInfo.of(rowType), limits, 128, input, mapping, deviceField);
        Counters counters = new Counters();
        open(deserializer, counters);

        ObjectMapper json = new ObjectMapper();
        int device = rowType.getFieldIndex("device_id");
        int time = rowType.getFieldIndex("ts_ms");
        int eventProblem = rowType.getFieldIndex("event_problem");
        int valueProblem = rowType.getFieldIndex("value_problem");
        int payload = rowType.getFieldIndex("payload");
        int eventTs = rowType.getFieldIndex("event_ts");
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        BufferedReader in =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        int index = 0;
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (line.trim().isEmpty()) {
                continue;
            }
            byte[] message = message(json.readTree(line), index);
            final int i = index++;
            long kept = counters.count("pointsKept");
            long ignored = counters.count("pointsIgnored");
            List<RowData> rows = new ArrayList<>();
            deserializer.deserialize(
                    message,
                    new Collector<RowData>() {
                        @Override
                        public void collect(RowData row) {
                            rows.add(row);
                        }

                        @Override
                        public void close() {}
                    });
            for (RowData row : rows) {
                ObjectNode node = json.createObjectNode();
                node.put("message", i);
                node.put("device_id", row.isNullAt(device) ? null : row.getString(device).toString());
                if (row.isNullAt(time)) {
                    node.putNull("ts_ms");
                } else {
                    node.put("ts_ms", row.getLong(time));
                }
                if (row.isNullAt(eventTs)) {
                    node.putNull("event_ts");
                } else {
                    node.put("event_ts", row.getTimestamp(eventTs, 3).getMillisecond());
                }
                ObjectNode values = node.putObject("metrics");
                for (String name : metrics) {
                    int k = rowType.getFieldIndex(name);
                    if (row.isNullAt(k)) {
                        values.putNull(name);
                    } else {
                        values.put(name, row.getDouble(k));
                    }
                }
                String event = row.isNullAt(eventProblem) ? null : row.getString(eventProblem).toString();
                String value = row.isNullAt(valueProblem) ? null : row.getString(valueProblem).toString();
                node.put("problem", event != null ? event : value);
                node.put("event_problem", event);
                node.put("value_problem", value);
                node.put(
                        "payload",
                        row.isNullAt(payload)
                                ? null
                                : new String(row.getBinary(payload), StandardCharsets.UTF_8));
                out.println(json.writeValueAsString(node));
            }
            ObjectNode summary = json.createObjectNode();
            summary.put("message", i);
            ObjectNode counted = summary.putObject("counters");
            counted.put("pointsKept", counters.count("pointsKept") - kept);
            counted.put("pointsIgnored", counters.count("pointsIgnored") - ignored);
            out.println(json.writeValueAsString(summary));
        }
        out.flush();
    }

    /**
     * The format's row type for these metrics: device_id STRING, ts_ms BIGINT, the metrics
     * (DOUBLE), event_problem STRING, value_problem STRING, payload BYTES, event_ts
     * TIMESTAMP_LTZ(3).
     */
    static RowType rowType(List<String> metrics) {
        List<DataTypes.Field> fields = new ArrayList<>();
        fields.add(DataTypes.FIELD("device_id", DataTypes.STRING()));
        fields.add(DataTypes.FIELD("ts_ms", DataTypes.BIGINT()));
        for (String name : metrics) {
            fields.add(DataTypes.FIELD(name, DataTypes.DOUBLE()));
        }
        fields.add(DataTypes.FIELD("event_problem", DataTypes.STRING()));
        fields.add(DataTypes.FIELD("value_problem", DataTypes.STRING()));
        fields.add(DataTypes.FIELD("payload", DataTypes.BYTES()));
        fields.add(DataTypes.FIELD("event_ts", DataTypes.TIMESTAMP_LTZ(3)));
        return (RowType) DataTypes.ROW(fields.toArray(new DataTypes.Field[0])).getLogicalType();
    }

    /** Opens a deserialization schema outside a cluster, its metrics into {@code metrics}. */
    static void open(DeserializationSchema<?> schema, MetricGroup metrics) throws Exception {
        schema.open(
                new DeserializationSchema.InitializationContext() {
                    @Override
                    public MetricGroup getMetricGroup() {
                        return metrics;
                    }

                    @Override
                    public UserCodeClassLoader getUserCodeClassLoader() {
                        return new UserCodeClassLoader() {
                            @Override
                            public ClassLoader asClassLoader() {
                                return FormatCheck.class.getClassLoader();
                            }

                            @Override
                            public void registerReleaseHookIfAbsent(
                                    String releaseHookName, Runnable releaseHook) {}
                        };
                    }
                });
    }

    /** A line's message: a JSON string's UTF-8 bytes, null, or {"base64": ...}'s bytes. */
    private static byte[] message(JsonNode line, int index) {
        if (line.isTextual()) {
            return line.asText().getBytes(StandardCharsets.UTF_8);
        }
        if (line.isNull()) {
            return null;
        }
        if (line.isObject() && line.path("base64").isTextual()) {
            return Base64.getDecoder().decode(line.get("base64").asText());
        }
        throw new IllegalArgumentException(
                "FormatCheck: message " + index + " is not a JSON string, null or {\"base64\": ...}");
    }

    /** A metric group that keeps the counters the format registers, to read them back. */
    private static final class Counters extends UnregisteredMetricsGroup {
        private final Map<String, Counter> counters = new LinkedHashMap<>();

        @Override
        public Counter counter(String name) {
            return counter(name, new SimpleCounter());
        }

        @Override
        public <C extends Counter> C counter(String name, C counter) {
            counters.put(name, counter);
            return counter;
        }

        long count(String name) {
            Counter counter = counters.get(name);
            return counter == null ? 0 : counter.getCount();
        }
    }
}

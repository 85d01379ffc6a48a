package local.anomaly.flink;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.metrics.Counter;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser.NumberType;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.io.doubleparser.JavaDoubleParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.json.JsonReadFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.data.binary.BinaryStringData;
import org.apache.flink.table.data.binary.BinaryStringDataUtil;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.util.Collector;
import org.apache.flink.util.jackson.JacksonMapperFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One telemetry event per Kafka message, parsed once: every field typed, every check made, and
 * the verdict in two columns. It never fails and never skips a message: a message that is not
 * an event still yields a row, whose problem says why (the dead letters read it).
 *
 * <p>Columns, by name: {@code device_id} STRING and {@code ts_ms} BIGINT; every DOUBLE column a
 * metric, read from the JSON field of its name; {@code event_problem} STRING, the first problem
 * of the message, its device id or the type of its time (NULL: none); {@code value_problem}
 * STRING, the first problem of a metric in column order (NULL: none); {@code payload} BYTES,
 * the message's exact bytes where either problem is set (NULL for a good event); optionally
 * {@code event_ts} TIMESTAMP_LTZ(3), the time as a timestamp where it is one (from 1970 to the
 * year 9999, as {@code TO_TIMESTAMP_LTZ(ts_ms, 3)} gives it; NULL otherwise), so that the
 * table's event time is a comparison instead of a conversion per message.
 *
 * <p>The JSON reading is Flink's own JSON format's (the same shaded Jackson, configured as it
 * is): Jackson picks the encoding from the first bytes, refuses invalid UTF-8 and nesting or
 * numbers beyond its limits, lets control characters stand unescaped in strings, and does not
 * read past the object. A field given twice counts with its last value. A field's value is read
 * as text (a string, a number as written, true/false, an object or array as JSON) and converted
 * as Flink's CAST from text does: the time as BIGINT, the metrics as DOUBLE. A JSON number is
 * taken as Jackson reads it, which gives the same value without the text: a decimal or a
 * nonzero integer as a metric, an integer within BIGINT as the time.
 *
 * <p>That is the {@code flat} input, one event with every metric per message. The agents'
 * inputs ({@code collectd}, {@code telegraf}, {@code otlp}: {@link AgentFormats}) send sparse
 * points instead: a message becomes one row per device and time it holds, with the metrics it
 * has points of and NULL for the others (the windows aggregate what arrived). Points of names
 * the catalogue does not keep are ignored and counted ({@code pointsIgnored}, beside {@code
 * pointsKept}, in the source's metrics). A message with a problem also yields one row with the
 * problem and the message's bytes: its first problem, whether the message's good points went
 * on or not.
 */
public class TelemetryJsonDeserializer implements DeserializationSchema<RowData> {
    private static final long serialVersionUID = 1L;

    private static final int DEVICE = -1;
    private static final int TIME = -2;
    /** Where a field's text would be: the field held a JSON number, read as such. */
    private static final String NUMBER = new String("number");
    /** TO_TIMESTAMP_LTZ(ts_ms, 3)'s range: 1970-01-01 to 9999-12-31 23:59:59.999. */
    static final long MAX_EVENT_MS = 253402300799999L;

    private final TypeInformation<RowData> producedType;
    private final int arity;
    private final int deviceColumn;
    private final int timeColumn;
    private final int eventProblemColumn;
    private final int valueProblemColumn;
    private final int payloadColumn;
    /** event_ts, or -1 where the table has none. */
    private final int eventTsColumn;
    /** The metric columns in column order, their names and limits. */
    private final int[] metricColumns;
    private final String[] metricNames;
    private final MetricLimit[] metricLimits;
    private final int maxDeviceIdLength;
    /** flat, or one of AgentFormats' inputs. */
    private final String input;
    private final AgentMapping mapping;
    private final String deviceField;

    private transient ObjectMapper mapper;
    private transient Map<String, Integer> metricIndex;
    private transient Counter pointsKept;
    private transient Counter pointsIgnored;
    private transient JsonFactory factory;
    /** Field name -> metric index, or DEVICE / TIME. */
    private transient Map<String, Integer> roles;
    private transient String[] texts;
    /** A metric's value where its text is NUMBER. */
    private transient double[] numbers;

    public TelemetryJsonDeserializer(
            RowType rowType,
            TypeInformation<RowData> producedType,
            Map<String, MetricLimit> limits,
            int maxDeviceIdLength) {
        this(rowType, producedType, limits, maxDeviceIdLength, "flat", AgentMapping.parse(""), "");
    }

    public TelemetryJsonDeserializer(
            RowType rowType,
            TypeInformation<RowData> producedType,
            Map<String, MetricLimit> limits,
            int maxDeviceIdLength,
            String input,
            AgentMapping mapping,
            String deviceField) {
        this.input = input;
        this.mapping = mapping;
        this.deviceField = deviceField;
        this.producedType = producedType;
        this.arity = rowType.getFieldCount();
        this.maxDeviceIdLength = maxDeviceIdLength;
        int device = -1, time = -1, eventProblem = -1, valueProblem = -1, payload = -1;
        int eventTs = -1;
        List<Integer> metrics = new ArrayList<>();
        List<String> names = rowType.getFieldNames();
        for (int i = 0; i < arity; i++) {
            String name = names.get(i);
            LogicalTypeRoot type = rowType.getTypeAt(i).getTypeRoot();
            if (name.equals("device_id") && type == LogicalTypeRoot.VARCHAR) {
                device = i;
            } else if (name.equals("ts_ms") && type == LogicalTypeRoot.BIGINT) {
                time = i;
            } else if (name.equals("event_problem") && type == LogicalTypeRoot.VARCHAR) {
                eventProblem = i;
            } else if (name.equals("value_problem") && type == LogicalTypeRoot.VARCHAR) {
                valueProblem = i;
            } else if (name.equals("payload") && type == LogicalTypeRoot.VARBINARY) {
                payload = i;
            } else if (name.equals("event_ts")
                    && type == LogicalTypeRoot.TIMESTAMP_WITH_LOCAL_TIME_ZONE) {
                eventTs = i;
            } else if (type == LogicalTypeRoot.DOUBLE) {
                metrics.add(i);
            } else {
                throw new IllegalArgumentException(
                        "telemetry-json: column " + name + " " + rowType.getTypeAt(i)
                                + " is none of device_id STRING, ts_ms BIGINT, a DOUBLE metric,"
                                + " event_problem STRING, value_problem STRING, payload BYTES,"
                                + " event_ts TIMESTAMP_LTZ(3)");
            }
        }
        if (device < 0 || time < 0 || eventProblem < 0 || valueProblem < 0 || payload < 0) {
            throw new IllegalArgumentException(
                    "telemetry-json needs the columns device_id STRING, ts_ms BIGINT,"
                            + " event_problem STRING, value_problem STRING and payload BYTES");
        }
        this.deviceColumn = device;
        this.timeColumn = time;
        this.eventProblemColumn = eventProblem;
        this.valueProblemColumn = valueProblem;
        this.payloadColumn = payload;
        this.eventTsColumn = eventTs;
        this.metricColumns = metrics.stream().mapToInt(Integer::intValue).toArray();
        this.metricNames = new String[metricColumns.length];
        this.metricLimits = new MetricLimit[metricColumns.length];
        for (int k = 0; k < metricColumns.length; k++) {
            metricNames[k] = names.get(metricColumns[k]);
            metricLimits[k] = limits.get(metricNames[k]);
        }
    }

    @Override
    public void open(InitializationContext context) {
        setUp();
        if (!input.equals("flat")) {
            pointsKept = context.getMetricGroup().counter("pointsKept");
            pointsIgnored = context.getMetricGroup().counter("pointsIgnored");
        }
    }

    private void setUp() {
        // As Flink's JSON format configures its mapper.
        mapper =
                JacksonMapperFactory.createObjectMapper()
                        .configure(JsonReadFeature.ALLOW_UNESCAPED_CONTROL_CHARS.mappedFeature(), true);
        factory = mapper.getFactory();
        roles = new HashMap<>();
        roles.put("device_id", DEVICE);
        roles.put("ts_ms", TIME);
        for (int k = 0; k < metricNames.length; k++) {
            roles.put(metricNames[k], k);
        }
        texts = new String[metricNames.length];
        numbers = new double[metricNames.length];
        metricIndex = new HashMap<>();
        for (int k = 0; k < metricNames.length; k++) {
            metricIndex.put(metricNames[k], k);
        }
    }

    @Override
    public void deserialize(byte[] message, Collector<RowData> out) throws IOException {
        if (input.equals("flat")) {
            out.collect(deserialize(message));
            return;
        }
        if (mapper == null) {
            setUp();
        }
        if (message == null) {
            GenericRowData row = new GenericRowData(arity);
            row.setField(eventProblemColumn, StringData.fromString("empty message"));
            out.collect(row);
            return;
        }
        AgentFormats.Points points = new AgentFormats.Points();
        String problem;
        try {
            problem =
                    AgentFormats.read(
                            input, mapper.readTree(message), mapping, deviceField, this::deviceProblem, points);
        } catch (AgentFormats.Refused e) {
            problem = e.getMessage();
            points.clear();
        } catch (IOException | RuntimeException e) {
            problem = input + ": not JSON";
            points.clear();
        }
        // One row per device and time, in the order of the message.
        Map<String, GenericRowData> rows = new LinkedHashMap<>();
        long kept = 0;
        for (AgentFormats.Point point : points) {
            int k = metricIndex.get(point.metric);
            MetricLimit limit = metricLimits[k];
            if (limit != null && (point.value < limit.min || point.value > limit.max)) {
                problem = problem != null ? problem : point.value < limit.min ? limit.belowReason : limit.aboveReason;
                continue;
            }
            GenericRowData row =
                    rows.computeIfAbsent(
                            point.device + "\u0000" + point.timeMs,
                            key -> {
                                GenericRowData r = new GenericRowData(arity);
                                r.setField(deviceColumn, StringData.fromString(point.device));
                                setTime(r, point.timeMs);
                                return r;
                            });
            row.setField(metricColumns[k], point.value);
            kept++;
        }
        // Kept: the points that went on (not those out of their metric's range).
        if (pointsKept != null) {
            pointsKept.inc(kept);
            pointsIgnored.inc(points.ignored);
        }
        for (GenericRowData row : rows.values()) {
            out.collect(row);
        }
        if (problem != null) {
            GenericRowData row = new GenericRowData(arity);
            row.setField(eventProblemColumn, StringData.fromString(problem));
            row.setField(payloadColumn, message);
            out.collect(row);
        }
    }


    @Override
    public RowData deserialize(byte[] message) {
        if (mapper == null) {
            setUp();
        }
        GenericRowData row = new GenericRowData(arity);
        if (message == null) {
            row.setField(eventProblemColumn, StringData.fromString("empty message"));
            return row;
        }
        String device = null;
        String time = null;
        long timeMs = 0;
        Arrays.fill(texts, null);
        try (JsonParser parser = factory.createParser(message)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return notAnObject(row, message);
            }
            while (parser.nextToken() == JsonToken.FIELD_NAME) {
                Integer role = roles.get(parser.currentName());
                JsonToken value = parser.nextToken();
                if (role == null) {
                    parser.skipChildren();
                    continue;
                }
                if (role == TIME && isLong(parser, value)) {
                    time = NUMBER;
                    timeMs = parser.getLongValue();
                    continue;
                }
                if (role >= 0 && readNumber(parser, value, role)) {
                    continue;
                }
                String text = text(parser, value);
                if (role == DEVICE) {
                    device = text;
                } else if (role == TIME) {
                    time = text;
                } else {
                    texts[role] = text;
                }
            }
            // The loop ends at the object's end: anything else has thrown.
        } catch (IOException | RuntimeException e) {
            return notAnObject(row, message);
        }
        String problem = deviceProblem(device);
        if (device != null) {
            // A valid id as its UTF-8 bytes: the same string, but the window's key and every
            // copy downstream need not encode it (through Flink's per-thread buffer) again.
            row.setField(
                    deviceColumn,
                    problem == null
                            ? StringData.fromBytes(device.getBytes(StandardCharsets.UTF_8))
                            : StringData.fromString(device));
        }
        // The time is read whatever the device id: a valid one moves the watermark.
        String timeProblem = null;
        if (time == null) {
            timeProblem = "ts_ms: missing or null";
        } else if (time == NUMBER) {
            setTime(row, timeMs);
        } else {
            try {
                setTime(row, BinaryStringDataUtil.toLong(BinaryStringData.fromString(time).trim()));
            } catch (NumberFormatException e) {
                timeProblem = "ts_ms: not an integer";
            }
        }
        if (problem == null) {
            problem = timeProblem;
        }
        String valueProblem = null;
        for (int k = 0; k < metricColumns.length && valueProblem == null; k++) {
            valueProblem = readMetric(row, k);
        }
        if (problem != null || valueProblem != null) {
            row.setField(eventProblemColumn, problem == null ? null : StringData.fromString(problem));
            row.setField(
                    valueProblemColumn,
                    valueProblem == null ? null : StringData.fromString(valueProblem));
            row.setField(payloadColumn, message);
        }
        return row;
    }

    private RowData notAnObject(GenericRowData row, byte[] message) {
        row.setField(eventProblemColumn, StringData.fromString("not a JSON object"));
        row.setField(payloadColumn, message);
        return row;
    }

    /** Sets the time, and event_ts where the table has it and the time is a timestamp. */
    private void setTime(GenericRowData row, long ms) {
        row.setField(timeColumn, ms);
        if (eventTsColumn >= 0 && ms >= 0 && ms <= MAX_EVENT_MS) {
            row.setField(eventTsColumn, TimestampData.fromEpochMillis(ms));
        }
    }

    /**
     * Reads metric k's JSON number without its text where that gives Double.parseDouble of the
     * text exactly: a decimal (parsed from the parser's characters), or an integer within
     * BIGINT other than 0 (a long converts to the nearest double, as its text parses; "-0"
     * parses to -0.0). Returns whether it did. An integer is read as a long, never through
     * Jackson's double: after an integer beyond BIGINT, Jackson 2.15 returns that one's double
     * for the next integer's getDoubleValue.
     */
    private boolean readNumber(JsonParser parser, JsonToken value, int k) throws IOException {
        if (value == JsonToken.VALUE_NUMBER_FLOAT) {
            // Straight from the parser's characters, without a String of them: the same double
            // as Double.parseDouble of the text (correctly rounded; a JSON decimal is a Java one).
            numbers[k] =
                    JavaDoubleParser.parseDouble(
                            parser.getTextCharacters(),
                            parser.getTextOffset(),
                            parser.getTextLength());
        } else if (isLong(parser, value) && parser.getLongValue() != 0) {
            numbers[k] = parser.getLongValue();
        } else {
            return false;
        }
        texts[k] = NUMBER;
        return true;
    }

    /** Whether the value is a JSON integer within BIGINT. */
    private static boolean isLong(JsonParser parser, JsonToken value) throws IOException {
        return value == JsonToken.VALUE_NUMBER_INT
                && parser.getNumberType() != NumberType.BIG_INTEGER;
    }

    /** A field's value as text, as a STRING column of Flink's JSON format reads it. */
    private String text(JsonParser parser, JsonToken value) throws IOException {
        switch (value) {
            case VALUE_NULL:
                return null;
            case VALUE_STRING:
            case VALUE_NUMBER_INT:
            case VALUE_NUMBER_FLOAT:
                return parser.getText();
            case VALUE_TRUE:
                return "true";
            case VALUE_FALSE:
                return "false";
            default:
                return mapper.readTree(parser).toString();
        }
    }

    private String deviceProblem(String device) {
        if (device == null) {
            return "device_id: missing or null";
        }
        boolean blank = true;
        for (int i = 0; i < device.length() && blank; i++) {
            blank = device.charAt(i) == ' ';
        }
        if (blank) {
            return "device_id: empty";
        }
        if (device.codePointCount(0, device.length()) > maxDeviceIdLength) {
            return "device_id: longer than " + maxDeviceIdLength + " characters";
        }
        boolean control = false;
        for (int i = 0; i < device.length(); ) {
            int c = device.codePointAt(i);
            int type = Character.getType(c);
            if (type == Character.SURROGATE) {
                return "device_id: not valid Unicode (a lone surrogate)";
            }
            control |= type == Character.CONTROL;
            i += Character.charCount(c);
        }
        return control ? "device_id: contains a control character" : null;
    }

    /** Sets metric k's value; returns its problem (NULL: none). */
    private String readMetric(GenericRowData row, int k) {
        String text = texts[k];
        String name = metricNames[k];
        if (text == null) {
            return name + ": missing or null";
        }
        double value;
        if (text == NUMBER) {
            value = numbers[k];
        } else {
            try {
                // What Flink's CAST(text AS DOUBLE) does (BinaryStringDataUtil.toDouble).
                value = Double.parseDouble(text);
            } catch (NumberFormatException e) {
                return name + ": not a number";
            }
        }
        if (Double.isNaN(value) || Double.isInfinite(value)) {
            return name + ": not a finite number";
        }
        MetricLimit limit = metricLimits[k];
        if (limit != null) {
            if (value < limit.min) {
                return limit.belowReason;
            }
            if (value > limit.max) {
                return limit.aboveReason;
            }
        }
        row.setField(metricColumns[k], value);
        return null;
    }

    @Override
    public boolean isEndOfStream(RowData nextElement) {
        return false;
    }

    @Override
    public TypeInformation<RowData> getProducedType() {
        return producedType;
    }
}

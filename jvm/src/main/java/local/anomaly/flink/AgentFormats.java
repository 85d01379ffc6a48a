package local.anomaly.flink;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;

/**
 * The agents' message formats, read into sparse points (README, "Agents"). Each reader adds the
 * message's points of kept metrics to a list and returns the message's first problem (null:
 * none). A problem of the whole message (its shape, its device, its time) stops the reading; a
 * problem of one point (a value that is not a number, a counter the catalogue calls a gauge)
 * skips that point only.
 *
 * <ul>
 *   <li>{@code collectd}: collectd's write_kafka {@code Format JSON}, an array of value lists.
 *       Device: {@code host}; time: {@code time} (seconds, fractional); metric: {@code
 *       plugin[-plugin_instance].type[-type_instance]}, then {@code .dsname} unless the type's
 *       one data source is {@code value}. {@code gauge}: the value; {@code derive} and {@code
 *       counter}: a running total (the catalogue marks the metric a counter, the job takes the
 *       rate); {@code absolute}: the count since the last value, divided by {@code interval}.
 *   <li>{@code telegraf}: Telegraf's JSON serializer, one metric ({@code name}, {@code fields},
 *       {@code tags}, {@code timestamp}) or a batch ({@code {"metrics": [...]}}). Device: the
 *       device tag; time: {@code timestamp} in s, ms, us or ns (told apart by its size); metric:
 *       {@code name.field}. Counters: as the catalogue marks them.
 *   <li>{@code otlp}: OpenTelemetry metrics as OTLP/JSON (an ExportMetricsServiceRequest).
 *       Device: the resource's device attribute; time: {@code timeUnixNano}; metric: the
 *       metric's {@code name}. Gauges and non-monotonic sums: the value; monotonic cumulative
 *       sums: a running total (a counter); delta sums: the value divided by the time since
 *       {@code startTimeUnixNano}. Histograms and summaries are not mapped.
 * </ul>
 */
final class AgentFormats {
    private AgentFormats() {}

    static final String COLLECTD = "collectd";
    static final String TELEGRAF = "telegraf";
    static final String OTLP = "otlp";

    /** A point of a kept metric. */
    static final class Point {
        final String device;
        final long timeMs;
        final String metric;
        final double value;

        Point(String device, long timeMs, String metric, double value) {
            this.device = device;
            this.timeMs = timeMs;
            this.metric = metric;
            this.value = value;
        }
    }

    /** The kept points of a message, and how many points it had of metrics not kept. */
    static final class Points extends ArrayList<Point> {
        private static final long serialVersionUID = 1L;
        long ignored;
    }

    /** Thrown for a problem of the whole message; its text is the dead letter's reason. */
    static final class Refused extends Exception {
        private static final long serialVersionUID = 1L;

        Refused(String reason) {
            super(reason, null, false, false);
        }
    }

    /** Checks a device id; returns its problem or null (TelemetryJsonDeserializer). */
    interface DeviceCheck {
        String problem(String device);
    }

    /** Reads one message; adds its kept points to {@code out}; returns the first point problem. */
    static String read(
            String format,
            JsonNode root,
            AgentMapping mapping,
            String deviceField,
            DeviceCheck check,
            Points out)
            throws Refused {
        switch (format) {
            case COLLECTD:
                return collectd(root, mapping, check, out);
            case TELEGRAF:
                return telegraf(root, mapping, deviceField, check, out);
            case OTLP:
                return otlp(root, mapping, deviceField, check, out);
            default:
                throw new IllegalArgumentException("telemetry-json: no input format " + format);
        }
    }

    // --- collectd ----------------------------------------------------------------------------

    private static String collectd(
            JsonNode root, AgentMapping mapping, DeviceCheck check, Points out)
            throws Refused {
        if (!root.isArray()) {
            throw new Refused("collectd: not a JSON array of value lists");
        }
        String problem = null;
        for (JsonNode list : root) {
            if (!list.isObject()) {
                throw new Refused("collectd: not a JSON array of value lists");
            }
            String device = device(list.get("host"), "collectd: host", check);
            long timeMs = millis(list.get("time"), 1000.0, "collectd: time");
            JsonNode values = list.get("values");
            JsonNode names = list.get("dsnames");
            JsonNode types = list.get("dstypes");
            if (values == null || !values.isArray() || names == null || !names.isArray()
                    || types == null || !types.isArray()
                    || values.size() != names.size() || values.size() != types.size()) {
                throw new Refused("collectd: values, dsnames and dstypes are not arrays of one length");
            }
            String base = part(list, "plugin", "plugin_instance") + "." + part(list, "type", "type_instance");
            boolean single = names.size() == 1 && "value".equals(names.get(0).asText());
            for (int i = 0; i < values.size(); i++) {
                String name = single ? base : base + "." + names.get(i).asText();
                String metric = mapping.metric(name, Collections.emptyMap());
                if (metric == null) {
                    out.ignored++;
                    continue;
                }
                String type = types.get(i).asText();
                String found = null;
                Double value = number(values.get(i));
                if (value == null) {
                    found = metric + ": not a finite number (collectd " + name + ")";
                } else if (type.equals("gauge")) {
                    found = expect(mapping, metric, false, "collectd gauge " + name);
                } else if (type.equals("derive") || type.equals("counter")) {
                    found = expect(mapping, metric, true, "collectd " + type + " " + name);
                } else if (type.equals("absolute")) {
                    found = expect(mapping, metric, false, "collectd absolute " + name);
                    Double interval = number(list.get("interval"));
                    if (found == null && (interval == null || interval <= 0)) {
                        found = metric + ": collectd absolute " + name + " without a positive interval";
                    } else if (found == null) {
                        value = value / interval;
                    }
                } else {
                    found = metric + ": collectd data source type " + type + " is not mapped";
                }
                if (found == null) {
                    out.add(new Point(device, timeMs, metric, value));
                } else if (problem == null) {
                    problem = found;
                }
            }
        }
        return problem;
    }

    private static String part(JsonNode list, String field, String instanceField) {
        String name = text(list.get(field));
        String instance = text(list.get(instanceField));
        return instance.isEmpty() ? name : name + "-" + instance;
    }

    // --- Telegraf ----------------------------------------------------------------------------

    private static String telegraf(
            JsonNode root, AgentMapping mapping, String deviceTag, DeviceCheck check, Points out)
            throws Refused {
        if (!root.isObject()) {
            throw new Refused("telegraf: not a JSON object");
        }
        JsonNode batch = root.get("metrics");
        if (batch != null && batch.isArray() && root.get("name") == null) {
            String problem = null;
            for (JsonNode metric : batch) {
                String found = telegrafMetric(metric, mapping, deviceTag, check, out);
                problem = problem == null ? found : problem;
            }
            return problem;
        }
        return telegrafMetric(root, mapping, deviceTag, check, out);
    }

    private static String telegrafMetric(
            JsonNode metric, AgentMapping mapping, String deviceTag, DeviceCheck check, Points out)
            throws Refused {
        JsonNode fields = metric.get("fields");
        JsonNode tags = metric.get("tags");
        if (!metric.isObject() || !metric.path("name").isTextual() || fields == null
                || !fields.isObject()) {
            throw new Refused("telegraf: not a metric with name and fields");
        }
        Map<String, String> tagMap = strings(tags);
        String device = device(tags == null ? null : tags.get(deviceTag), "telegraf: tag " + deviceTag, check);
        long timeMs = epochMillis(metric.get("timestamp"), "telegraf: timestamp");
        String problem = null;
        Iterator<Map.Entry<String, JsonNode>> it = fields.fields();
        String prefix = metric.get("name").asText() + ".";
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> field = it.next();
            String name = prefix + field.getKey();
            String kept = mapping.metric(name, tagMap);
            if (kept == null) {
                out.ignored++;
                continue;
            }
            Double value = number(field.getValue());
            if (value == null) {
                problem = problem == null ? kept + ": not a finite number (telegraf " + name + ")" : problem;
            } else {
                out.add(new Point(device, timeMs, kept, value));
            }
        }
        return problem;
    }

    /** Telegraf's timestamp in its unit (json_timestamp_units), told apart by its size. */
    private static long epochMillis(JsonNode node, String what) throws Refused {
        Double t = number(node);
        if (t == null) {
            throw new Refused(what + ": missing or not a number");
        }
        double abs = Math.abs(t);
        double perMs = abs < 1e11 ? 1e-3 : abs < 1e14 ? 1 : abs < 1e17 ? 1e3 : 1e6;
        return Math.round(t / perMs);
    }

    // --- OpenTelemetry -----------------------------------------------------------------------

    private static String otlp(
            JsonNode root, AgentMapping mapping, String deviceAttribute, DeviceCheck check, Points out)
            throws Refused {
        JsonNode resources = root.get("resourceMetrics");
        if (!root.isObject() || resources == null || !resources.isArray()) {
            throw new Refused("otlp: not an ExportMetricsServiceRequest (no resourceMetrics array)");
        }
        String problem = null;
        for (JsonNode resource : resources) {
            Map<String, String> attributes = attributes(resource.path("resource").get("attributes"));
            String id = attributes.get(deviceAttribute);
            String device =
                    device(id == null ? null : resource, id, "otlp: resource attribute " + deviceAttribute, check);
            for (JsonNode scope : resource.path("scopeMetrics")) {
                for (JsonNode metric : scope.path("metrics")) {
                    String name = metric.path("name").asText();
                    if (!mapping.knows(name)) {
                        out.ignored += pointCount(metric);
                        continue;
                    }
                    String found = otlpMetric(metric, name, device, mapping, out);
                    problem = problem == null ? found : problem;
                }
            }
        }
        return problem;
    }

    private static String otlpMetric(
            JsonNode metric, String name, String device, AgentMapping mapping, Points out)
            throws Refused {
        JsonNode gauge = metric.get("gauge");
        JsonNode sum = metric.get("sum");
        JsonNode data = gauge != null ? gauge : sum;
        boolean delta = false;
        boolean cumulative = false;
        String kind = "gauge";
        if (sum != null) {
            int temporality = sum.path("aggregationTemporality").asInt(0);
            boolean monotonic = sum.path("isMonotonic").asBoolean(false);
            delta = temporality == 1;
            cumulative = temporality == 2 && monotonic;
            kind = delta ? "delta sum" : cumulative ? "monotonic cumulative sum" : "non-monotonic sum";
        }
        String problem = null;
        if (data == null) {
            for (String other : OTHER_KINDS) {
                for (JsonNode point : metric.path(other).path("dataPoints")) {
                    String kept = mapping.metric(name, attributes(point.get("attributes")));
                    if (kept != null) {
                        return kept + ": otlp " + other + " " + name + " is not mapped (gauges and sums are)";
                    }
                    out.ignored++;
                }
            }
            return null;
        }
        for (JsonNode point : data.path("dataPoints")) {
            String kept = mapping.metric(name, attributes(point.get("attributes")));
            if (kept == null) {
                out.ignored++;
                continue;
            }
            long timeNs = nanos(point.get("timeUnixNano"), "otlp: timeUnixNano");
            JsonNode raw = point.has("asDouble") ? point.get("asDouble") : point.get("asInt");
            Double value = number(raw);
            String found = expect(mapping, kept, cumulative, "otlp " + kind + " " + name);
            if (found == null && value == null) {
                found = kept + ": not a finite number (otlp " + name + ")";
            }
            if (found == null && delta) {
                Long start = point.has("startTimeUnixNano")
                        ? nanos(point.get("startTimeUnixNano"), "otlp: startTimeUnixNano") : null;
                if (start == null || start >= timeNs) {
                    found = kept + ": otlp delta sum " + name + " without a start before its time";
                } else {
                    value = value / ((timeNs - start) / 1e9);
                }
            }
            if (found == null) {
                out.add(new Point(device, Math.floorDiv(timeNs, 1_000_000L), kept, value));
            } else if (problem == null) {
                problem = found;
            }
        }
        return problem;
    }

    /** The metric kinds not mapped: a dead letter if the catalogue names one. */
    private static final String[] OTHER_KINDS = {"histogram", "exponentialHistogram", "summary"};

    /** How many data points a metric has, of any kind (all ignored when its name is not kept). */
    private static int pointCount(JsonNode metric) {
        int count = metric.path("gauge").path("dataPoints").size()
                + metric.path("sum").path("dataPoints").size();
        for (String other : OTHER_KINDS) {
            count += metric.path(other).path("dataPoints").size();
        }
        return count;
    }

    private static Map<String, String> attributes(JsonNode list) {
        Map<String, String> map = new HashMap<>();
        if (list == null) {
            return map;
        }
        for (JsonNode attribute : list) {
            JsonNode value = attribute.path("value");
            Iterator<JsonNode> one = value.elements();
            if (one.hasNext()) {
                map.put(attribute.path("key").asText(), one.next().asText());
            }
        }
        return map;
    }

    private static long nanos(JsonNode node, String what) throws Refused {
        if (node != null && (node.isIntegralNumber() || node.isTextual())) {
            try {
                return Long.parseLong(node.asText().trim());
            } catch (NumberFormatException e) {
                // below
            }
        }
        throw new Refused(what + ": missing or not an integer");
    }

    // --- shared ------------------------------------------------------------------------------

    /** The problem of a point whose kind (running total or not) disagrees with the catalogue. */
    private static String expect(AgentMapping mapping, String metric, boolean total, String what) {
        if (mapping.isCounter(metric) == total) {
            return null;
        }
        return total
                ? metric + ": " + what + " is a running total: mark the metric counter: true in the catalogue"
                : metric + ": " + what + " is not a running total, but the catalogue marks the metric a counter";
    }

    private static String device(JsonNode node, String what, DeviceCheck check) throws Refused {
        return device(node, node == null || node.isNull() ? null : node.asText(), what, check);
    }

    private static String device(JsonNode node, String id, String what, DeviceCheck check)
            throws Refused {
        if (node == null || id == null) {
            throw new Refused(what + ": missing or null");
        }
        String problem = check.problem(id);
        if (problem != null) {
            throw new Refused(what + " (device_id): " + problem.substring(problem.indexOf(':') + 2));
        }
        return id;
    }

    private static long millis(JsonNode node, double perSecondMs, String what) throws Refused {
        Double t = number(node);
        if (t == null) {
            throw new Refused(what + ": missing or not a number");
        }
        return Math.round(t * perSecondMs);
    }

    /** A finite number, given as a JSON number or a string holding one; null otherwise. */
    static Double number(JsonNode node) {
        if (node == null || node.isNull()) {
            return null;
        }
        double value;
        if (node.isNumber()) {
            value = node.asDouble();
        } else if (node.isTextual()) {
            try {
                value = Double.parseDouble(node.asText().trim());
            } catch (NumberFormatException e) {
                return null;
            }
        } else {
            return null;
        }
        return Double.isNaN(value) || Double.isInfinite(value) ? null : value;
    }

    private static String text(JsonNode node) {
        return node == null || node.isNull() ? "" : node.asText();
    }

    private static Map<String, String> strings(JsonNode object) {
        Map<String, String> map = new HashMap<>();
        if (object != null && object.isObject()) {
            Iterator<Map.Entry<String, JsonNode>> it = object.fields();
            while (it.hasNext()) {
                Map.Entry<String, JsonNode> e = it.next();
                map.put(e.getKey(), e.getValue().asText());
            }
        }
        return map;
    }
}

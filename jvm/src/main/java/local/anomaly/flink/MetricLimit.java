package local.anomaly.flink;

import java.io.Serializable;
import java.util.HashMap;
import java.util.Map;

/** A metric's physical range from the catalogue, with the texts its dead letters show. */
final class MetricLimit implements Serializable {
    private static final long serialVersionUID = 1L;

    final double min;
    final double max;
    final String belowReason;
    final String aboveReason;

    MetricLimit(String name, String min, String max, String minText, String maxText) {
        this.min = min.isEmpty() ? Double.NEGATIVE_INFINITY : Double.parseDouble(min);
        this.max = max.isEmpty() ? Double.POSITIVE_INFINITY : Double.parseDouble(max);
        this.belowReason = name + ": below its minimum " + minText;
        this.aboveReason = name + ": above its maximum " + maxText;
    }

    /** {@code name:min:max:minText:maxText} entries separated by commas. */
    static Map<String, MetricLimit> parseAll(String text) {
        Map<String, MetricLimit> limits = new HashMap<>();
        for (String entry : text.split(",")) {
            if (entry.trim().isEmpty()) {
                continue;
            }
            String[] parts = entry.trim().split(":", -1);
            if (parts.length != 5) {
                throw new IllegalArgumentException(
                        "telemetry-json.limits: '" + entry + "' is not name:min:max:minText:maxText");
            }
            limits.put(parts[0], new MetricLimit(parts[0], parts[1], parts[2], parts[3], parts[4]));
        }
        return limits;
    }
}

package local.anomaly.flink;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * How the sparse points a metrics agent sends become the catalogue's metrics: which names to
 * keep (an agent sends hundreds), what they are called here, and which are counters (running
 * totals the job turns into rates per second, {@link CounterRates}).
 *
 * <p>The mapping comes from the catalogue as JSON (common/sql.py agent_mapping): {@code
 * {"names": [[agent name, {tag: value, ...}, metric], ...], "counters": [metric, ...]}}. An
 * agent point matches an entry when its name is the entry's and its tags include the entry's
 * tags (the first such entry wins). Points of names no entry has are ignored (counted, not dead
 * letters): they are metrics this deployment does not score.
 */
final class AgentMapping implements Serializable {
    private static final long serialVersionUID = 1L;

    /** One entry of the mapping: the tags a point must carry, and the metric it becomes. */
    static final class Entry implements Serializable {
        private static final long serialVersionUID = 1L;
        final Map<String, String> tags;
        final String metric;

        Entry(Map<String, String> tags, String metric) {
            this.tags = tags;
            this.metric = metric;
        }
    }

    private final Map<String, List<Entry>> byName = new HashMap<>();
    private final Set<String> counters = new HashSet<>();

    static AgentMapping parse(String json) {
        AgentMapping mapping = new AgentMapping();
        if (json == null || json.trim().isEmpty()) {
            return mapping;
        }
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(json);
        } catch (IOException e) {
            throw new IllegalArgumentException("telemetry-json.mapping: not JSON: " + e.getMessage());
        }
        for (JsonNode entry : root.path("names")) {
            Map<String, String> tags = new HashMap<>();
            Iterator<Map.Entry<String, JsonNode>> fields = entry.get(1).fields();
            while (fields.hasNext()) {
                Map.Entry<String, JsonNode> tag = fields.next();
                tags.put(tag.getKey(), tag.getValue().asText());
            }
            mapping.byName
                    .computeIfAbsent(entry.get(0).asText(), k -> new ArrayList<>())
                    .add(new Entry(tags, entry.get(2).asText()));
        }
        for (JsonNode counter : root.path("counters")) {
            mapping.counters.add(counter.asText());
        }
        return mapping;
    }

    /** Whether any entry has this name (a cheap test before the tags are read). */
    boolean knows(String name) {
        return byName.containsKey(name);
    }

    /** The metric a point of this name and these tags becomes; null: not kept. */
    String metric(String name, Map<String, String> tags) {
        List<Entry> entries = byName.get(name);
        if (entries == null) {
            return null;
        }
        for (Entry entry : entries) {
            boolean all = true;
            for (Map.Entry<String, String> tag : entry.tags.entrySet()) {
                all &= tag.getValue().equals(tags.get(tag.getKey()));
            }
            if (all) {
                return entry.metric;
            }
        }
        return null;
    }

    boolean isCounter(String metric) {
        return counters.contains(metric);
    }
}

package local.anomaly.flink;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.format.DecodingFormat;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DeserializationFormatFactory;
import org.apache.flink.table.factories.DynamicTableFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.RowType;

import java.util.HashSet;
import java.util.Set;

/**
 * {@code 'format' = 'telemetry-json'}: one telemetry event per message, read once. See {@link
 * TelemetryJsonDeserializer} for the columns it fills and the checks it makes.
 */
public class TelemetryJsonFormatFactory implements DeserializationFormatFactory {

    public static final String IDENTIFIER = "telemetry-json";

    /** Each metric's range: {@code name:min:max:minText:maxText,...}, empty parts for none. */
    public static final ConfigOption<String> LIMITS =
            ConfigOptions.key("limits")
                    .stringType()
                    .defaultValue("")
                    .withDescription("metric ranges, name:min:max:minText:maxText,...");

    /** What a message holds: flat (one event with every metric), collectd, telegraf, otlp. */
    public static final ConfigOption<String> INPUT =
            ConfigOptions.key("input").stringType().defaultValue("flat");

    /** The catalogue's agent names and counters, as JSON (AgentMapping). */
    public static final ConfigOption<String> MAPPING =
            ConfigOptions.key("mapping").stringType().defaultValue("");

    /** The Telegraf tag or OTLP resource attribute that names the device. */
    public static final ConfigOption<String> DEVICE_FIELD =
            ConfigOptions.key("device-field").stringType().defaultValue("host");

    public static final ConfigOption<Integer> MAX_DEVICE_ID_LENGTH =
            ConfigOptions.key("max-device-id-length").intType().defaultValue(128);

    @Override
    public DecodingFormat<DeserializationSchema<RowData>> createDecodingFormat(
            DynamicTableFactory.Context context, ReadableConfig options) {
        FactoryUtil.validateFactoryOptions(this, options);
        final String limits = options.get(LIMITS);
        final int maxDeviceIdLength = options.get(MAX_DEVICE_ID_LENGTH);
        final String input = options.get(INPUT);
        if (!input.equals("flat") && !input.equals(AgentFormats.COLLECTD)
                && !input.equals(AgentFormats.TELEGRAF) && !input.equals(AgentFormats.OTLP)) {
            throw new IllegalArgumentException(
                    "telemetry-json.input: " + input + " is none of flat, collectd, telegraf, otlp");
        }
        final AgentMapping mapping = AgentMapping.parse(options.get(MAPPING));
        final String deviceField = options.get(DEVICE_FIELD);
        return new DecodingFormat<DeserializationSchema<RowData>>() {
            @Override
            public DeserializationSchema<RowData> createRuntimeDecoder(
                    DynamicTableSource.Context sourceContext, DataType physicalType) {
                TypeInformation<RowData> produced =
                        sourceContext.createTypeInformation(physicalType);
                return new TelemetryJsonDeserializer(
                        (RowType) physicalType.getLogicalType(),
                        produced,
                        MetricLimit.parseAll(limits),
                        maxDeviceIdLength,
                        input,
                        mapping,
                        deviceField);
            }

            @Override
            public ChangelogMode getChangelogMode() {
                return ChangelogMode.insertOnly();
            }
        };
    }

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return new HashSet<>();
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        Set<ConfigOption<?>> options = new HashSet<>();
        options.add(LIMITS);
        options.add(MAX_DEVICE_ID_LENGTH);
        options.add(INPUT);
        options.add(MAPPING);
        options.add(DEVICE_FIELD);
        return options;
    }
}

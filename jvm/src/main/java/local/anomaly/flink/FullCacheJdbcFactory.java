package local.anomaly.flink;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.table.catalog.ResolvedCatalogTable;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.connector.source.InputFormatProvider;
import org.apache.flink.table.connector.source.LookupTableSource;
import org.apache.flink.table.connector.source.ScanTableSource;
import org.apache.flink.table.connector.source.lookup.FullCachingLookupProvider;
import org.apache.flink.table.connector.source.lookup.cache.trigger.PeriodicCacheReloadTrigger;
import org.apache.flink.table.factories.DynamicTableSourceFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.util.TimeUtils;

import java.time.Duration;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;

/**
 * {@code 'connector' = 'jdbc-full-cache'}: a JDBC table for lookup joins that each lookup subtask
 * holds whole, loaded by one scan when it opens and loaded anew every {@code reload-interval}.
 *
 * <p>The JDBC connector caches lookups per key only (PARTIAL): a starting job's first windows,
 * one per device, each wait for a query of their own (20,000 for 10,000 devices and two tables).
 * Here they are answered from memory after one scan per table. The other options are the JDBC
 * connector's (url, table-name, username, password); its scan reads the table.
 *
 * <p>A reload that fails fails the job's next lookup (Flink's {@code LookupFullCache}), so the
 * job restarts and loads the table again: never a lookup answered from a half-read table.
 */
public class FullCacheJdbcFactory implements DynamicTableSourceFactory {

    public static final String IDENTIFIER = "jdbc-full-cache";

    /** How often the table is read anew (a row changed in the database is seen after it). */
    public static final ConfigOption<Duration> RELOAD_INTERVAL =
            ConfigOptions.key("reload-interval")
                    .durationType()
                    .defaultValue(Duration.ofSeconds(60))
                    .withDescription("how often the whole table is read anew");

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return Collections.emptySet(); // the JDBC connector checks its own
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return Collections.singleton(RELOAD_INTERVAL);
    }

    @Override
    public DynamicTableSource createDynamicTableSource(Context context) {
        Map<String, String> options = new HashMap<>(context.getCatalogTable().getOptions());
        String interval = options.remove(RELOAD_INTERVAL.key());
        Duration reload =
                interval == null ? RELOAD_INTERVAL.defaultValue() : TimeUtils.parseDuration(interval);
        if (reload.isZero() || reload.isNegative()) {
            throw new IllegalArgumentException(
                    "'" + RELOAD_INTERVAL.key() + "' must be positive, not " + interval);
        }
        options.put(FactoryUtil.CONNECTOR.key(), "jdbc");
        ResolvedCatalogTable table = context.getCatalogTable().copy(options);
        DynamicTableSourceFactory jdbc =
                FactoryUtil.discoverFactory(
                        context.getClassLoader(), DynamicTableSourceFactory.class, "jdbc");
        DynamicTableSource source =
                jdbc.createDynamicTableSource(
                        new FactoryUtil.DefaultDynamicTableContext(
                                context.getObjectIdentifier(),
                                table,
                                context.getEnrichmentOptions(),
                                context.getConfiguration(),
                                context.getClassLoader(),
                                context.isTemporary()));
        RowType rowType =
                (RowType) table.getResolvedSchema().toPhysicalRowDataType().getLogicalType();
        return new Source((ScanTableSource) source, reload, rowType);
    }

    /** The JDBC table's scan, as the loader of a full lookup cache. */
    static final class Source implements LookupTableSource {
        private final ScanTableSource scan;
        private final Duration reload;
        private final RowType rowType;

        Source(ScanTableSource scan, Duration reload, RowType rowType) {
            this.scan = scan;
            this.reload = reload;
            this.rowType = rowType;
        }

        @Override
        public LookupRuntimeProvider getLookupRuntimeProvider(LookupContext context) {
            ScanTableSource.ScanRuntimeProvider provider =
                    scan.getScanRuntimeProvider(
                            new ScanTableSource.ScanContext() {
                                @Override
                                public <T> TypeInformation<T> createTypeInformation(
                                        DataType producedDataType) {
                                    return context.createTypeInformation(producedDataType);
                                }

                                @Override
                                public <T> TypeInformation<T> createTypeInformation(
                                        LogicalType producedLogicalType) {
                                    return context.createTypeInformation(producedLogicalType);
                                }

                                @Override
                                public DataStructureConverter createDataStructureConverter(
                                        DataType producedDataType) {
                                    return context.createDataStructureConverter(producedDataType);
                                }
                            });
            if (provider instanceof InputFormatProvider) {
                // Held as binary rows: a third of the heap (CompactRows).
                provider =
                        InputFormatProvider.of(
                                new CompactRows(
                                        ((InputFormatProvider) provider).createInputFormat(),
                                        rowType));
            }
            return FullCachingLookupProvider.of(
                    provider,
                    new PeriodicCacheReloadTrigger(
                            reload, PeriodicCacheReloadTrigger.ScheduleMode.FIXED_DELAY));
        }

        @Override
        public DynamicTableSource copy() {
            return new Source((ScanTableSource) scan.copy(), reload, rowType);
        }

        @Override
        public String asSummaryString() {
            return "JDBC, whole table cached (reloaded every " + reload + ")";
        }
    }
}

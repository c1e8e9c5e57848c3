import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Share-group throughput (scripts/measure-share.py): CONSUMERS KafkaShareConsumers of one
 * share group, each on its own thread, read a topic that already holds RECORDS records and
 * ACCEPT every record on its own (explicit acknowledgement mode: one acknowledge call per
 * record; the acknowledgements travel with the member's next ShareFetch, as the client sends
 * them). The group's share.auto.offset.reset is set to earliest first (Admin, GROUP config).
 *
 *     java ShareThroughput BOOTSTRAP GROUP TOPIC CONSUMERS RECORDS TIMEOUT_S [key=value ...]
 *
 * Prints JSON lines on stdout: {"event": "first"} when the first record arrives, then one
 * {"event": "done", ...} once every offset of the topic's partitions below RECORDS in all was
 * delivered and each member's commitSync of its last acknowledgements returned: the seconds
 * from the first record to then, the distinct records, the deliveries (a record delivered
 * again after its lock ended counts twice), the records each member got and the
 * acknowledgement errors. Exit status 1 if RECORDS were not all delivered within TIMEOUT_S.
 */
public final class ShareThroughput {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String group = args[1];
        String topic = args[2];
        int consumers = Integer.parseInt(args[3]);
        long records = Long.parseLong(args[4]);
        long timeoutMs = Long.parseLong(args[5]) * 1000;
        Properties extra = new Properties();
        for (int i = 6; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            extra.put(kv[0], kv[1]);
        }

        Properties adminProps = new Properties();
        adminProps.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            ConfigResource resource = new ConfigResource(ConfigResource.Type.GROUP, group);
            AlterConfigOp earliest = new AlterConfigOp(
                new ConfigEntry("share.auto.offset.reset", "earliest"), AlterConfigOp.OpType.SET);
            admin.incrementalAlterConfigs(Map.of(resource, List.of(earliest)))
                .all().get(30, TimeUnit.SECONDS);
        }

        Map<Long, Boolean> seen = new ConcurrentHashMap<>();
        AtomicLong deliveries = new AtomicLong();
        AtomicLong ackErrors = new AtomicLong();
        AtomicLong firstNanos = new AtomicLong();
        AtomicLong committedNanos = new AtomicLong();
        AtomicBoolean stop = new AtomicBoolean();
        long[] perMember = new long[consumers];
        List<Thread> threads = new ArrayList<>();
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        for (int m = 0; m < consumers; m++) {
            final int member = m;
            Thread thread = new Thread(() -> {
                Properties props = new Properties();
                props.put("bootstrap.servers", bootstrap);
                props.put("group.id", group);
                props.put("key.deserializer", ByteArrayDeserializer.class.getName());
                props.put("value.deserializer", ByteArrayDeserializer.class.getName());
                props.put("share.acknowledgement.mode", "explicit");
                props.putAll(extra);
                try (KafkaShareConsumer<byte[], byte[]> consumer =
                        new KafkaShareConsumer<>(props)) {
                    consumer.subscribe(Collections.singletonList(topic));
                    while (!stop.get() && System.nanoTime() < deadline) {
                        ConsumerRecords<byte[], byte[]> got = consumer.poll(Duration.ofMillis(100));
                        for (ConsumerRecord<byte[], byte[]> record : got) {
                            if (firstNanos.get() == 0) {
                                if (firstNanos.compareAndSet(0, System.nanoTime())) {
                                    synchronized (System.out) {
                                        System.out.println("{\"event\": \"first\"}");
                                        System.out.flush();
                                    }
                                }
                            }
                            consumer.acknowledge(record, AcknowledgeType.ACCEPT);
                            deliveries.incrementAndGet();
                            perMember[member]++;
                            long key = ((long) record.partition() << 40) | record.offset();
                            seen.put(key, Boolean.TRUE);
                            if (seen.size() >= records) {
                                stop.set(true);
                            }
                        }
                    }
                    Map<TopicIdPartition, Optional<KafkaException>> outcome = consumer.commitSync();
                    committedNanos.accumulateAndGet(System.nanoTime(), Math::max);
                    for (Optional<KafkaException> error : outcome.values()) {
                        if (error.isPresent()) {
                            ackErrors.incrementAndGet();
                        }
                    }
                } catch (Exception e) {
                    System.err.println("member " + member + ": " + e);
                    ackErrors.incrementAndGet();
                }
            });
            thread.start();
            threads.add(thread);
        }
        for (Thread thread : threads) {
            thread.join();
        }
        long end = committedNanos.get();
        double seconds = firstNanos.get() == 0 || end == 0 ? 0 : (end - firstNanos.get()) / 1e9;
        StringBuilder members = new StringBuilder("[");
        for (int m = 0; m < consumers; m++) {
            members.append(m == 0 ? "" : ", ").append(perMember[m]);
        }
        members.append("]");
        System.out.println("{\"event\": \"done\", \"seconds\": " + seconds
            + ", \"records\": " + seen.size() + ", \"deliveries\": " + deliveries.get()
            + ", \"per_member\": " + members + ", \"ack_errors\": " + ackErrors.get() + "}");
        System.out.flush();
        System.exit(seen.size() >= records ? 0 : 1);
    }
}

import java.time.Duration;
import java.util.Collections;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * One share group member (KIP-932) with the Java client's KafkaShareConsumer, in explicit
 * acknowledgement mode, speaking JSON event lines on stdout (ready, record, acked, closed):
 *
 *     java ShareMember BOOTSTRAP GROUP TOPIC MODE [key=value ...]
 *
 * MODE says what it does with each record it gets:
 *   accept   ACCEPT it
 *   release  RELEASE it when delivered for the first time, ACCEPT it after
 *   reject   REJECT it
 *   bounce   RELEASE it every time (it comes back until its delivery count limit archives it)
 *   hold     nothing: after the first poll that returns records it stops polling and keeps
 *            them until their acquisition locks end (or it is killed)
 * After each poll it commits its acknowledgements (commitSync) and reports the outcome.
 * SIGTERM closes the consumer cleanly; SIGKILL is a crash.
 */
public final class ShareMember {
    private static void say(String json) {
        synchronized (System.out) {
            System.out.println(json);
            System.out.flush();
        }
    }

    private static String quote(String text) {
        if (text == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("group.id", args[1]);
        props.put("key.deserializer", StringDeserializer.class.getName());
        props.put("value.deserializer", StringDeserializer.class.getName());
        props.put("share.acknowledgement.mode", "explicit");
        String topic = args[2];
        String mode = args[3];
        for (int i = 4; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            props.put(kv[0], kv[1]);
        }
        KafkaShareConsumer<String, String> consumer = new KafkaShareConsumer<>(props);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            consumer.wakeup();
            try {
                closed.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        consumer.subscribe(Collections.singletonList(topic));
        say("{\"event\": \"ready\"}");
        boolean holding = false;
        try {
            while (true) {
                if (holding) {
                    Thread.sleep(100);
                    continue;
                }
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> record : records) {
                    Optional<Short> delivery = record.deliveryCount();
                    int count = delivery.isPresent() ? delivery.get() : -1;
                    say("{\"event\": \"record\", \"partition\": " + record.partition()
                        + ", \"offset\": " + record.offset() + ", \"delivery\": " + count
                        + ", \"value\": " + quote(record.value()) + "}");
                    switch (mode) {
                        case "accept":
                            consumer.acknowledge(record, AcknowledgeType.ACCEPT);
                            break;
                        case "release":
                            consumer.acknowledge(record,
                                count <= 1 ? AcknowledgeType.RELEASE : AcknowledgeType.ACCEPT);
                            break;
                        case "reject":
                            consumer.acknowledge(record, AcknowledgeType.REJECT);
                            break;
                        case "bounce":
                            consumer.acknowledge(record, AcknowledgeType.RELEASE);
                            break;
                        default:
                            holding = true;
                            break;
                    }
                }
                if (!records.isEmpty() && !holding) {
                    Map<TopicIdPartition, Optional<KafkaException>> result = consumer.commitSync();
                    StringBuilder errors = new StringBuilder("[");
                    for (Map.Entry<TopicIdPartition, Optional<KafkaException>> e : result.entrySet()) {
                        if (e.getValue().isPresent()) {
                            if (errors.length() > 1) {
                                errors.append(", ");
                            }
                            errors.append(quote(e.getKey() + ": " + e.getValue().get()));
                        }
                    }
                    say("{\"event\": \"acked\", \"count\": " + records.count() + ", \"errors\": "
                        + errors.append("]") + "}");
                }
            }
        } catch (WakeupException e) {
            // SIGTERM: close below.
        } finally {
            try {
                consumer.close(Duration.ofSeconds(10));
            } finally {
                say("{\"event\": \"closed\"}");
                closed.countDown();
            }
        }
    }
}

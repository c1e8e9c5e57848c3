import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * One consumer group member with the Java client, speaking the event lines of
 * tests/clients/group_member.py on stdout (ready, assigned, revoked, added, record, closed).
 *
 *     java GroupMember BOOTSTRAP GROUP TOPIC [key=value ...]
 *
 * Each polled batch is committed synchronously before the next poll. SIGTERM closes the
 * consumer cleanly (LeaveGroup); SIGKILL is a crash. The option test.close=leave (not given
 * to the client) closes with CloseOptions LEAVE_GROUP: a static member leaves for good
 * (member epoch -1) instead of for a while (-2).
 */
public final class GroupMember {
    private static void say(String json) {
        synchronized (System.out) {
            System.out.println(json);
            System.out.flush();
        }
    }

    private static String partitions(Collection<TopicPartition> partitions) {
        List<Integer> sorted = new ArrayList<>();
        for (TopicPartition tp : partitions) {
            sorted.add(tp.partition());
        }
        Collections.sort(sorted);
        return sorted.toString();
    }

    private static String quote(String text) {
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
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        props.put("fetch.max.wait.ms", "100");
        props.put("session.timeout.ms", "6000");
        props.put("heartbeat.interval.ms", "500");
        props.put("partition.assignment.strategy",
                  "org.apache.kafka.clients.consumer.RangeAssignor");
        props.put("key.deserializer", StringDeserializer.class.getName());
        props.put("value.deserializer", StringDeserializer.class.getName());
        for (int i = 3; i < args.length; i++) {
            String[] pair = args[i].split("=", 2);
            props.put(pair[0], pair[1]);
        }
        boolean leaveForGood = "leave".equals(props.remove("test.close"));
        if ("consumer".equals(props.get("group.protocol"))) {
            // KIP-848: the broker owns these; the client refuses them with this protocol.
            props.remove("session.timeout.ms");
            props.remove("heartbeat.interval.ms");
            props.remove("partition.assignment.strategy");
        }
        String topic = args[2];
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props);
        CountDownLatch closed = new CountDownLatch(1);
        Thread main = Thread.currentThread();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            consumer.wakeup();
            try {
                closed.await();
                main.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                say("{\"event\": \"revoked\", \"partitions\": " + partitions(partitions) + "}");
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                say("{\"event\": \"added\", \"partitions\": " + partitions(partitions) + "}");
            }
        });
        say("{\"event\": \"ready\"}");
        String last = null;
        try {
            while (true) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(100));
                String current = partitions(consumer.assignment());
                if (!current.equals(last)) {
                    say("{\"event\": \"assigned\", \"partitions\": " + current + "}");
                    last = current;
                }
                for (ConsumerRecord<String, String> record : records) {
                    String value = record.value() == null ? "" : record.value();
                    say("{\"event\": \"record\", \"partition\": " + record.partition()
                        + ", \"offset\": " + record.offset() + ", \"value\": " + quote(value)
                        + "}");
                }
                if (!records.isEmpty()) {
                    try {
                        consumer.commitSync();
                    } catch (WakeupException e) {
                        throw e;
                    } catch (Exception e) {
                        say("{\"event\": \"commit_failed\", \"error\": " + quote(e.toString())
                            + "}");
                    }
                }
            }
        } catch (WakeupException e) {
            // SIGTERM: close below.
        } catch (Exception e) {
            say("{\"event\": \"crashed\", \"error\": " + quote(e.toString()) + "}");
        } finally {
            if (leaveForGood) {
                consumer.close(CloseOptions.groupMembershipOperation(
                    CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
            } else {
                consumer.close();
            }
            say("{\"event\": \"closed\"}");
            closed.countDown();
        }
    }
}

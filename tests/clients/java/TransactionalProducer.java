// The Java producer with a transactional.id: three transactions on partition 0 of a topic
// (N records "c-i" committed, N records "a-i" aborted, N records "d-i" committed), then a
// read_committed consumer reads the partition to its end. Prints "committed X" with the number
// of records the consumer saw; exits non-zero on any failure.
//
// Usage: java TransactionalProducer BOOTSTRAP TOPIC N
// (compiled together with ProducerSetup.java, which reads the arguments)

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class TransactionalProducer {
    public static void main(String[] args) throws Exception {
        ProducerSetup setup = new ProducerSetup(args);
        String bootstrap = setup.bootstrap;
        String topic = setup.topic;
        int count = setup.count;
        Properties props = setup.producerProps();
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "java-" + UUID.randomUUID());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            producer.initTransactions();
            String[] prefixes = {"c-", "a-", "d-"};
            for (String prefix : prefixes) {
                producer.beginTransaction();
                for (int i = 0; i < count; i++) {
                    producer.send(new ProducerRecord<>(topic, 0, null, prefix + i));
                }
                if (prefix.equals("a-")) {
                    producer.abortTransaction();
                } else {
                    producer.commitTransaction();
                }
            }
        }
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        TopicPartition tp = new TopicPartition(topic, 0);
        List<String> seen = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.assign(Collections.singletonList(tp));
            consumer.seekToBeginning(Collections.singletonList(tp));
            Map<TopicPartition, Long> end = consumer.endOffsets(Collections.singletonList(tp));
            long deadline = System.currentTimeMillis() + 60000;
            while (consumer.position(tp) < end.get(tp)) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("did not reach the end offset " + end.get(tp));
                }
                Duration wait = Duration.ofMillis(200);
                for (ConsumerRecord<String, String> record : consumer.poll(wait)) {
                    seen.add(record.value());
                }
            }
        }
        for (String value : seen) {
            if (value.startsWith("a-")) {
                throw new IllegalStateException("read_committed saw aborted record " + value);
            }
        }
        System.out.println("committed " + seen.size());
    }
}

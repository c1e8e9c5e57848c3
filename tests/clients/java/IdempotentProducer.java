// The Java producer with its default settings (enable.idempotence=true, acks=all since Kafka
// 3.0): sends N records "value-0".."value-N-1" to partition 0 of a topic and waits for every
// acknowledgement. Prints "acknowledged N" on success; exits non-zero on any failure.
//
// Usage: java IdempotentProducer BOOTSTRAP TOPIC N
// (compiled together with ProducerSetup.java, which reads the arguments)

import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;

public class IdempotentProducer {
    public static void main(String[] args) throws Exception {
        ProducerSetup setup = new ProducerSetup(args);
        String topic = setup.topic;
        int count = setup.count;
        Properties props = setup.producerProps();
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, 0, null, "value-" + i)));
            }
            producer.flush();
            long expected = 0;
            for (Future<RecordMetadata> future : sent) {
                RecordMetadata metadata = future.get(60, TimeUnit.SECONDS);
                if (metadata.offset() != expected) {
                    throw new IllegalStateException(
                        "record " + expected + " landed at offset " + metadata.offset());
                }
                expected++;
            }
            System.out.println("acknowledged " + expected);
        }
    }
}

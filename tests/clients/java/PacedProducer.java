// An idempotent producer that sends one record to partition 0 every 5 ms for a while, so that
// a leader change happens while it writes (test_replication.py, KIP-951 hints). Prints
// "acknowledged N" when every record was acknowledged; exits non-zero on any failure. Its
// client logs (Sender, Metadata at TRACE with the log4j2 configuration the test passes)
// show whether it took the new leader from a Produce answer.
//
// Usage: java PacedProducer BOOTSTRAP TOPIC SECONDS
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

public class PacedProducer {
    public static void main(String[] args) throws Exception {
        ProducerSetup setup = new ProducerSetup(args);
        long seconds = setup.count;
        Properties props = setup.producerProps();
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        // Long enough that no periodic refresh happens during the run.
        props.put(ProducerConfig.METADATA_MAX_AGE_CONFIG, "600000");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
            int i = 0;
            while (System.nanoTime() < end) {
                sent.add(producer.send(new ProducerRecord<>(setup.topic, 0, null, "v-" + i)));
                i++;
                Thread.sleep(5);
            }
            producer.flush();
            for (Future<RecordMetadata> future : sent) {
                future.get(60, TimeUnit.SECONDS);
            }
            System.out.println("acknowledged " + sent.size());
        }
    }
}

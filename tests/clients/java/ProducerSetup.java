// Set-up shared by IdempotentProducer and TransactionalProducer: their command line
// (BOOTSTRAP TOPIC N) and the producer settings both start from. The tests compile this file
// together with each of them (javac ... IdempotentProducer.java ProducerSetup.java).

import java.util.Properties;

import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.StringSerializer;

final class ProducerSetup {
    final String bootstrap;
    final String topic;
    final int count;

    /** Reads BOOTSTRAP TOPIC N from the command line. */
    ProducerSetup(String[] args) {
        bootstrap = args[0];
        topic = args[1];
        count = Integer.parseInt(args[2]);
    }

    /** String keys and values; send and initTransactions block for at most 60 s. */
    Properties producerProps() {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "60000");
        return props;
    }
}

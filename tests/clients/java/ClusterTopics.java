import java.util.List;
import java.util.Properties;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;

/**
 * Creates a topic through one broker with the Java AdminClient (createTopics, replication
 * factor 1), then describes it (describeTopics, Metadata) and prints one line:
 * partitions=<count> leaders=<leader of each partition, in order>.
 * Used by test_cluster.py. Usage: ClusterTopics <bootstrap> <topic> <partitions>
 */
public class ClusterTopics {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "40000");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "35000");
        try (Admin admin = Admin.create(props)) {
            NewTopic topic = new NewTopic(args[1], Integer.parseInt(args[2]), (short) 1);
            admin.createTopics(List.of(topic)).all().get();
            TopicDescription description =
                admin.describeTopics(List.of(args[1])).allTopicNames().get().get(args[1]);
            String leaders = description.partitions().stream()
                .map(p -> Integer.toString(p.leader().id()))
                .collect(Collectors.joining(","));
            System.out.println("partitions=" + description.partitions().size()
                + " leaders=" + leaders);
        }
    }
}

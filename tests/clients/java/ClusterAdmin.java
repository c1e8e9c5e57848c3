import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.PartitionReassignment;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;

/**
 * The Java AdminClient's cluster admin calls, one per run, each printing one line per
 * partition. Used by test_cluster_admin.py. Usage:
 *   ClusterAdmin <bootstrap> describe <topic> <partitions per response>
 *       p=<i> leader=<id> replicas=<ids> isr=<ids>          (describeTopics)
 *   ClusterAdmin <bootstrap> elect <preferred|unclean> <topic> <partition>...
 *       p=<i> result=<OK|exception class>                   (electLeaders)
 *   ClusterAdmin <bootstrap> reassign <topic> <partition>=<ids|cancel>...
 *       p=<i> result=<OK|exception class>                   (alterPartitionReassignments)
 *   ClusterAdmin <bootstrap> list
 *       <topic>-<i> replicas=<ids> adding=<ids> removing=<ids>  (listPartitionReassignments)
 * ids are comma-separated node ids.
 */
public class ClusterAdmin {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "40000");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "35000");
        try (Admin admin = Admin.create(props)) {
            switch (args[1]) {
                case "describe" -> describe(admin, args[2], Integer.parseInt(args[3]));
                case "elect" -> elect(admin, args);
                case "reassign" -> reassign(admin, args);
                case "list" -> list(admin);
                default -> throw new IllegalArgumentException(args[1]);
            }
        }
    }

    static String ids(List<Integer> ids) {
        return ids.stream().map(String::valueOf).collect(Collectors.joining(","));
    }

    static String nodes(List<Node> nodes) {
        return ids(nodes.stream().map(Node::id).toList());
    }

    static void describe(Admin admin, String topic, int limit) throws Exception {
        DescribeTopicsOptions options = new DescribeTopicsOptions().partitionSizeLimitPerResponse(limit);
        TopicDescription description =
            admin.describeTopics(List.of(topic), options).allTopicNames().get().get(topic);
        for (TopicPartitionInfo p : description.partitions()) {
            System.out.println("p=" + p.partition() + " leader=" + (p.leader() == null ? -1 : p.leader().id())
                + " replicas=" + nodes(p.replicas()) + " isr=" + nodes(p.isr()));
        }
    }

    static String outcome(KafkaFuture<?> future) throws InterruptedException {
        try {
            future.get();
            return "OK";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        }
    }

    static void elect(Admin admin, String[] args) throws Exception {
        ElectionType type = args[2].equals("unclean") ? ElectionType.UNCLEAN : ElectionType.PREFERRED;
        Set<TopicPartition> partitions = new HashSet<>();
        for (int i = 4; i < args.length; i++) {
            partitions.add(new TopicPartition(args[3], Integer.parseInt(args[i])));
        }
        Map<TopicPartition, Optional<Throwable>> results =
            admin.electLeaders(type, partitions).partitions().get();
        for (int i = 4; i < args.length; i++) {
            Optional<Throwable> error = results.get(new TopicPartition(args[3], Integer.parseInt(args[i])));
            String result = error == null ? "MISSING"
                : error.map(e -> e.getClass().getSimpleName()).orElse("OK");
            System.out.println("p=" + args[i] + " result=" + result);
        }
    }

    static void reassign(Admin admin, String[] args) throws Exception {
        Map<TopicPartition, Optional<NewPartitionReassignment>> wanted = new HashMap<>();
        List<Integer> order = new ArrayList<>();
        for (int i = 3; i < args.length; i++) {
            String[] parts = args[i].split("=");
            int partition = Integer.parseInt(parts[0]);
            order.add(partition);
            Optional<NewPartitionReassignment> target = parts[1].equals("cancel") ? Optional.empty()
                : Optional.of(new NewPartitionReassignment(
                    List.of(parts[1].split(",")).stream().map(Integer::valueOf).toList()));
            wanted.put(new TopicPartition(args[2], partition), target);
        }
        Map<TopicPartition, KafkaFuture<Void>> results = admin.alterPartitionReassignments(wanted).values();
        for (int partition : order) {
            System.out.println("p=" + partition + " result="
                + outcome(results.get(new TopicPartition(args[2], partition))));
        }
    }

    static void list(Admin admin) throws Exception {
        Map<TopicPartition, PartitionReassignment> ongoing =
            admin.listPartitionReassignments().reassignments().get();
        for (Map.Entry<TopicPartition, PartitionReassignment> entry : ongoing.entrySet()) {
            PartitionReassignment r = entry.getValue();
            System.out.println(entry.getKey() + " replicas=" + ids(r.replicas()) + " adding="
                + ids(r.addingReplicas()) + " removing=" + ids(r.removingReplicas()));
        }
        System.out.println("listed=" + ongoing.size());
    }
}

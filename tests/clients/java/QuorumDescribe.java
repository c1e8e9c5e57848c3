import java.util.Properties;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.QuorumInfo;

/**
 * Asks one broker for the controller quorum (describeMetadataQuorum, DescribeQuorum) and the
 * cluster (describeCluster, DescribeCluster) with the Java AdminClient, and prints one line:
 * leader=<id> epoch=<term> hw=<high watermark> voters=<ids> controller=<id> brokers=<ids>
 * observers=<ids>. Used by test_cluster.py and test_cluster_broker_only.py.
 * Usage: QuorumDescribe <bootstrap>
 */
public class QuorumDescribe {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        try (Admin admin = Admin.create(props)) {
            QuorumInfo quorum = admin.describeMetadataQuorum().quorumInfo().get();
            DescribeClusterResult cluster = admin.describeCluster();
            String voters = quorum.voters().stream()
                .map(v -> Integer.toString(v.replicaId())).sorted()
                .collect(Collectors.joining(","));
            String observers = quorum.observers().stream()
                .map(v -> Integer.toString(v.replicaId())).sorted()
                .collect(Collectors.joining(","));
            String brokers = cluster.nodes().get().stream()
                .map(n -> Integer.toString(n.id())).sorted()
                .collect(Collectors.joining(","));
            System.out.println("leader=" + quorum.leaderId() + " epoch=" + quorum.leaderEpoch()
                + " hw=" + quorum.highWatermark() + " voters=" + voters
                + " controller=" + cluster.controller().get().id() + " brokers=" + brokers
                + " observers=" + observers);
        }
    }
}

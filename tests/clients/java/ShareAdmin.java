import java.util.Collections;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.SharePartitionOffsetInfo;
import org.apache.kafka.clients.admin.ShareGroupDescription;
import org.apache.kafka.clients.admin.ShareMemberDescription;
import org.apache.kafka.common.TopicPartition;

/**
 * The Java Admin client's view of share groups (KIP-932), one JSON line each:
 *
 *     java ShareAdmin BOOTSTRAP GROUP
 *
 * prints {"listed": [[group, type, state], ...]} from listGroups(forShareGroups()), then
 * {"group": ..., "state": ..., "epoch": ..., "members": [[member id, [partitions]], ...]}
 * from describeShareGroups, then {"offsets": {"partition": start offset, ...}} and
 * {"lags": {"partition": lag or null, ...}} from listShareGroupOffsets
 * (DescribeShareGroupOffsets; the lag is v1's, Kafka 4.2, KIP-1226).
 */
public final class ShareAdmin {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(props)) {
            StringBuilder listed = new StringBuilder("{\"listed\": [");
            boolean first = true;
            for (GroupListing g : admin.listGroups(ListGroupsOptions.forShareGroups()).all().get()) {
                if (!first) {
                    listed.append(", ");
                }
                first = false;
                listed.append("[\"").append(g.groupId()).append("\", \"")
                    .append(g.type().map(Object::toString).orElse("")).append("\", \"")
                    .append(g.groupState().map(Object::toString).orElse("")).append("\"]");
            }
            System.out.println(listed.append("]}"));
            ShareGroupDescription d = admin.describeShareGroups(Collections.singletonList(args[1]))
                .all().get().get(args[1]);
            StringBuilder out = new StringBuilder("{\"group\": \"").append(d.groupId())
                .append("\", \"state\": \"").append(d.groupState())
                .append("\", \"epoch\": ").append(d.groupEpoch()).append(", \"members\": [");
            first = true;
            for (ShareMemberDescription m : d.members()) {
                if (!first) {
                    out.append(", ");
                }
                first = false;
                out.append("[\"").append(m.consumerId()).append("\", [");
                boolean firstPartition = true;
                for (TopicPartition tp : m.assignment().topicPartitions()) {
                    if (!firstPartition) {
                        out.append(", ");
                    }
                    firstPartition = false;
                    out.append(tp.partition());
                }
                out.append("]]");
            }
            System.out.println(out.append("]}"));
            Map<TopicPartition, SharePartitionOffsetInfo> offsets = admin
                .listShareGroupOffsets(Collections.singletonMap(args[1], new ListShareGroupOffsetsSpec()))
                .partitionsToOffsetInfo(args[1]).get();
            StringBuilder starts = new StringBuilder("{\"offsets\": {");
            StringBuilder lags = new StringBuilder("{\"lags\": {");
            first = true;
            for (Map.Entry<TopicPartition, SharePartitionOffsetInfo> e : offsets.entrySet()) {
                if (!first) {
                    starts.append(", ");
                    lags.append(", ");
                }
                first = false;
                long start = e.getValue() == null ? -1 : e.getValue().startOffset();
                starts.append("\"").append(e.getKey().partition()).append("\": ").append(start);
                String lag = e.getValue() == null ? "null"
                    : e.getValue().lag().map(Object::toString).orElse("null");
                lags.append("\"").append(e.getKey().partition()).append("\": ").append(lag);
            }
            System.out.println(starts.append("}}"));
            System.out.println(lags.append("}}"));
        }
    }
}

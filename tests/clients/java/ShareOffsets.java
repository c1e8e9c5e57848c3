import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterShareGroupOffsetsResult;
import org.apache.kafka.clients.admin.DeleteShareGroupOffsetsResult;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicPartition;

/**
 * The Java Admin client's share group offset changes (KIP-932), one JSON line:
 *
 *     java ShareOffsets BOOTSTRAP GROUP alter TOPIC:PARTITION=OFFSET ...
 *     java ShareOffsets BOOTSTRAP GROUP delete TOPIC ...
 *
 * alter calls alterShareGroupOffsets (AlterShareGroupOffsets) and prints
 * {"TOPIC:PARTITION": outcome, ...} from each partitionResult; delete calls
 * deleteShareGroupOffsets (DeleteShareGroupOffsets) and prints {"TOPIC": outcome, ...} from
 * each topicResult. An outcome is "ok" or the simple class name of the exception.
 */
public final class ShareOffsets {
    private static String outcome(KafkaFuture<Void> future) throws InterruptedException {
        try {
            future.get();
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        }
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        String group = args[1];
        Map<String, String> out = new LinkedHashMap<>();
        try (Admin admin = Admin.create(props)) {
            if (args[2].equals("alter")) {
                Map<TopicPartition, Long> offsets = new LinkedHashMap<>();
                for (int i = 3; i < args.length; i++) {
                    String[] kv = args[i].split("=");
                    int colon = kv[0].lastIndexOf(':');
                    offsets.put(new TopicPartition(kv[0].substring(0, colon),
                        Integer.parseInt(kv[0].substring(colon + 1))), Long.parseLong(kv[1]));
                }
                AlterShareGroupOffsetsResult result = admin.alterShareGroupOffsets(group, offsets);
                for (TopicPartition tp : offsets.keySet()) {
                    out.put(tp.topic() + ":" + tp.partition(), outcome(result.partitionResult(tp)));
                }
                out.put("all", outcome(result.all()));
            } else {
                Set<String> topics = new LinkedHashSet<>();
                for (int i = 3; i < args.length; i++) {
                    topics.add(args[i]);
                }
                DeleteShareGroupOffsetsResult result = admin.deleteShareGroupOffsets(group, topics);
                for (String topic : topics) {
                    out.put(topic, outcome(result.topicResult(topic)));
                }
                out.put("all", outcome(result.all()));
            }
        }
        StringBuilder json = new StringBuilder("{");
        boolean first = true;
        for (Map.Entry<String, String> e : out.entrySet()) {
            if (!first) {
                json.append(", ");
            }
            first = false;
            json.append('"').append(e.getKey()).append("\": \"").append(e.getValue()).append('"');
        }
        System.out.println(json.append('}'));
    }
}

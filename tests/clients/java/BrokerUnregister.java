import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

/**
 * Unregisters a broker with the Java AdminClient (unregisterBroker, UnregisterBroker) and
 * prints one line: "unregistered <id>", or "failed <exception class>: <message>". Used by
 * test_cluster_broker_only.py.
 * Usage: BrokerUnregister <bootstrap> <broker id>
 */
public class BrokerUnregister {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        int brokerId = Integer.parseInt(args[1]);
        try (Admin admin = Admin.create(props)) {
            try {
                admin.unregisterBroker(brokerId).all().get();
                System.out.println("unregistered " + brokerId);
            } catch (ExecutionException e) {
                Throwable cause = e.getCause();
                System.out.println("failed " + cause.getClass().getSimpleName() + ": "
                    + cause.getMessage());
            }
        }
    }
}

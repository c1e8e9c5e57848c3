import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

/**
 * The Java AdminClient's ACL calls against one broker: createAcls of one ACL (User:alice may
 * READ topics prefixed with the given prefix), then describeAcls(AclBindingFilter.ANY), one
 * line per ACL: acl <resource type> <name> <pattern type> <principal> <host> <operation>
 * <permission>. An error prints "error <exception class>" and exits 1 (a broker without an
 * authorizer answers SecurityDisabledException). Used by test_acls.py.
 * Usage: AclDescribe <bootstrap> <prefix>
 */
public class AclDescribe {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        try (Admin admin = Admin.create(props)) {
            AclBinding binding = new AclBinding(
                new ResourcePattern(ResourceType.TOPIC, args[1], PatternType.PREFIXED),
                new AccessControlEntry("User:alice", "*", AclOperation.READ,
                    AclPermissionType.ALLOW));
            admin.createAcls(List.of(binding)).all().get();
            for (AclBinding acl : admin.describeAcls(AclBindingFilter.ANY).values().get()) {
                System.out.println("acl " + acl.pattern().resourceType() + " "
                    + acl.pattern().name() + " " + acl.pattern().patternType() + " "
                    + acl.entry().principal() + " " + acl.entry().host() + " "
                    + acl.entry().operation() + " " + acl.entry().permissionType());
            }
        } catch (ExecutionException e) {
            System.out.println("error " + e.getCause().getClass().getSimpleName());
            System.exit(1);
        }
    }
}

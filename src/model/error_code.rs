//! Kafka's error codes, the ones Spate answers with. The wire values never change (Kafka's
//! `Errors.java`); the variant names are Kafka's, in camel case.
//!
//! Internal results (a partition's produce or read, the coordinators' answers) carry an
//! `ErrorCode`; it becomes an `i16` only where a handler in `api` fills in a response of the
//! `kafka-protocol` crate (`code`). It lives in `model` so that every layer from storage up
//! may name one.

/// A Kafka error code. `ErrorCode::None` (0) is success, as on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum ErrorCode {
    UnknownServerError = -1,
    #[default]
    None = 0,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    LeaderNotAvailable = 5,
    /// Retriable: this node does not lead (or knows no leader of) what was asked for.
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    OffsetMetadataTooLarge = 12,
    /// Retriable: the connection to another broker failed (what a client's network error is).
    NetworkException = 13,
    CoordinatorLoadInProgress = 14,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    InvalidTopicException = 17,
    NotEnoughReplicas = 19,
    NotEnoughReplicasAfterAppend = 20,
    InvalidRequiredAcks = 21,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    TopicAuthorizationFailed = 29,
    GroupAuthorizationFailed = 30,
    ClusterAuthorizationFailed = 31,
    UnsupportedSaslMechanism = 33,
    IllegalSaslState = 34,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    InvalidRequest = 42,
    UnsupportedForMessageFormat = 43,
    OutOfOrderSequenceNumber = 45,
    InvalidProducerEpoch = 47,
    InvalidTxnState = 48,
    InvalidProducerIdMapping = 49,
    InvalidTransactionTimeout = 50,
    ConcurrentTransactions = 51,
    TransactionCoordinatorFenced = 52,
    TransactionalIdAuthorizationFailed = 53,
    /// An ACL request to a broker without an authorizer.
    SecurityDisabled = 54,
    SaslAuthenticationFailed = 58,
    OperationNotAttempted = 55,
    /// Retriable: the broker cannot write to its disk now (free space below the reserve, a
    /// log that cannot be opened).
    KafkaStorageError = 56,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    FencedLeaderEpoch = 74,
    UnknownLeaderEpoch = 75,
    MemberIdRequired = 79,
    PreferredLeaderNotAvailable = 80,
    /// A new member of a group at its maximum size (`group.consumer.max.size`,
    /// `group.share.max.size`).
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    EligibleLeadersNotAvailable = 83,
    ElectionNotNeeded = 84,
    NoReassignmentInProgress = 85,
    GroupSubscribedToTopic = 86,
    InvalidRecord = 87,
    /// OffsetFetch with require_stable: a transaction still holds an offset of the
    /// partition (retriable: clients ask again).
    UnstableOffsetCommit = 88,
    ProducerFenced = 90,
    ResourceNotFound = 91,
    DuplicateResource = 92,
    UnacceptableCredential = 93,
    /// AlterPartition based on a partition epoch that is not the partition's (an older
    /// state: the metadata log refuses it; `cluster::state`).
    InvalidUpdateVersion = 95,
    UnknownTopicId = 100,
    /// UnregisterBroker of a node id the metadata log has no registration of.
    BrokerIdNotRegistered = 102,
    TransactionalIdNotFound = 105,
    /// AlterPartition adding a replica whose broker is fenced.
    IneligibleReplica = 107,
    FencedMemberEpoch = 110,
    UnreleasedInstanceId = 111,
    UnsupportedAssignor = 112,
    StaleMemberEpoch = 113,
    /// A share acknowledgement of a record the member does not hold (KIP-932).
    InvalidRecordState = 121,
    ShareSessionNotFound = 122,
    InvalidShareSessionEpoch = 123,
    InvalidRegularExpression = 128,
}

impl ErrorCode {
    /// Every code, by wire value.
    pub const ALL: [ErrorCode; 80] = [
        ErrorCode::UnknownServerError,
        ErrorCode::None,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut,
        ErrorCode::MessageTooLarge,
        ErrorCode::OffsetMetadataTooLarge,
        ErrorCode::NetworkException,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::InvalidTopicException,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::InvalidRequiredAcks,
        ErrorCode::IllegalGeneration,
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::InvalidGroupId,
        ErrorCode::UnknownMemberId,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::RebalanceInProgress,
        ErrorCode::TopicAuthorizationFailed,
        ErrorCode::GroupAuthorizationFailed,
        ErrorCode::ClusterAuthorizationFailed,
        ErrorCode::UnsupportedSaslMechanism,
        ErrorCode::IllegalSaslState,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidReplicaAssignment,
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidRequest,
        ErrorCode::UnsupportedForMessageFormat,
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::InvalidTxnState,
        ErrorCode::InvalidProducerIdMapping,
        ErrorCode::InvalidTransactionTimeout,
        ErrorCode::ConcurrentTransactions,
        ErrorCode::TransactionCoordinatorFenced,
        ErrorCode::TransactionalIdAuthorizationFailed,
        ErrorCode::SecurityDisabled,
        ErrorCode::SaslAuthenticationFailed,
        ErrorCode::OperationNotAttempted,
        ErrorCode::KafkaStorageError,
        ErrorCode::NonEmptyGroup,
        ErrorCode::GroupIdNotFound,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::MemberIdRequired,
        ErrorCode::PreferredLeaderNotAvailable,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::FencedInstanceId,
        ErrorCode::EligibleLeadersNotAvailable,
        ErrorCode::ElectionNotNeeded,
        ErrorCode::NoReassignmentInProgress,
        ErrorCode::GroupSubscribedToTopic,
        ErrorCode::InvalidRecord,
        ErrorCode::UnstableOffsetCommit,
        ErrorCode::ProducerFenced,
        ErrorCode::ResourceNotFound,
        ErrorCode::DuplicateResource,
        ErrorCode::UnacceptableCredential,
        ErrorCode::InvalidUpdateVersion,
        ErrorCode::UnknownTopicId,
        ErrorCode::BrokerIdNotRegistered,
        ErrorCode::TransactionalIdNotFound,
        ErrorCode::IneligibleReplica,
        ErrorCode::FencedMemberEpoch,
        ErrorCode::UnreleasedInstanceId,
        ErrorCode::UnsupportedAssignor,
        ErrorCode::StaleMemberEpoch,
        ErrorCode::InvalidRecordState,
        ErrorCode::ShareSessionNotFound,
        ErrorCode::InvalidShareSessionEpoch,
        ErrorCode::InvalidRegularExpression,
    ];

    /// The wire value.
    pub const fn code(self) -> i16 {
        self as i16
    }

    /// The code with this wire value, if Spate knows it.
    pub fn from_code(code: i16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|known| known.code() == code)
    }
}

impl TryFrom<i16> for ErrorCode {
    type Error = i16;

    fn try_from(code: i16) -> Result<ErrorCode, i16> {
        ErrorCode::from_code(code).ok_or(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire values, written out once more: a renumbered variant fails here.
    const WIRE: [(ErrorCode, i16); 80] = [
        (ErrorCode::UnknownServerError, -1),
        (ErrorCode::None, 0),
        (ErrorCode::OffsetOutOfRange, 1),
        (ErrorCode::CorruptMessage, 2),
        (ErrorCode::UnknownTopicOrPartition, 3),
        (ErrorCode::LeaderNotAvailable, 5),
        (ErrorCode::NotLeaderOrFollower, 6),
        (ErrorCode::RequestTimedOut, 7),
        (ErrorCode::MessageTooLarge, 10),
        (ErrorCode::OffsetMetadataTooLarge, 12),
        (ErrorCode::NetworkException, 13),
        (ErrorCode::CoordinatorLoadInProgress, 14),
        (ErrorCode::CoordinatorNotAvailable, 15),
        (ErrorCode::NotCoordinator, 16),
        (ErrorCode::InvalidTopicException, 17),
        (ErrorCode::NotEnoughReplicas, 19),
        (ErrorCode::NotEnoughReplicasAfterAppend, 20),
        (ErrorCode::InvalidRequiredAcks, 21),
        (ErrorCode::IllegalGeneration, 22),
        (ErrorCode::InconsistentGroupProtocol, 23),
        (ErrorCode::InvalidGroupId, 24),
        (ErrorCode::UnknownMemberId, 25),
        (ErrorCode::InvalidSessionTimeout, 26),
        (ErrorCode::RebalanceInProgress, 27),
        (ErrorCode::TopicAuthorizationFailed, 29),
        (ErrorCode::GroupAuthorizationFailed, 30),
        (ErrorCode::ClusterAuthorizationFailed, 31),
        (ErrorCode::UnsupportedSaslMechanism, 33),
        (ErrorCode::IllegalSaslState, 34),
        (ErrorCode::UnsupportedVersion, 35),
        (ErrorCode::TopicAlreadyExists, 36),
        (ErrorCode::InvalidPartitions, 37),
        (ErrorCode::InvalidReplicationFactor, 38),
        (ErrorCode::InvalidReplicaAssignment, 39),
        (ErrorCode::InvalidConfig, 40),
        (ErrorCode::InvalidRequest, 42),
        (ErrorCode::UnsupportedForMessageFormat, 43),
        (ErrorCode::OutOfOrderSequenceNumber, 45),
        (ErrorCode::InvalidProducerEpoch, 47),
        (ErrorCode::InvalidTxnState, 48),
        (ErrorCode::InvalidProducerIdMapping, 49),
        (ErrorCode::InvalidTransactionTimeout, 50),
        (ErrorCode::ConcurrentTransactions, 51),
        (ErrorCode::TransactionCoordinatorFenced, 52),
        (ErrorCode::TransactionalIdAuthorizationFailed, 53),
        (ErrorCode::SecurityDisabled, 54),
        (ErrorCode::SaslAuthenticationFailed, 58),
        (ErrorCode::OperationNotAttempted, 55),
        (ErrorCode::KafkaStorageError, 56),
        (ErrorCode::NonEmptyGroup, 68),
        (ErrorCode::GroupIdNotFound, 69),
        (ErrorCode::FencedLeaderEpoch, 74),
        (ErrorCode::UnknownLeaderEpoch, 75),
        (ErrorCode::MemberIdRequired, 79),
        (ErrorCode::PreferredLeaderNotAvailable, 80),
        (ErrorCode::GroupMaxSizeReached, 81),
        (ErrorCode::FencedInstanceId, 82),
        (ErrorCode::EligibleLeadersNotAvailable, 83),
        (ErrorCode::ElectionNotNeeded, 84),
        (ErrorCode::NoReassignmentInProgress, 85),
        (ErrorCode::GroupSubscribedToTopic, 86),
        (ErrorCode::InvalidRecord, 87),
        (ErrorCode::UnstableOffsetCommit, 88),
        (ErrorCode::ProducerFenced, 90),
        (ErrorCode::ResourceNotFound, 91),
        (ErrorCode::DuplicateResource, 92),
        (ErrorCode::UnacceptableCredential, 93),
        (ErrorCode::InvalidUpdateVersion, 95),
        (ErrorCode::UnknownTopicId, 100),
        (ErrorCode::BrokerIdNotRegistered, 102),
        (ErrorCode::TransactionalIdNotFound, 105),
        (ErrorCode::IneligibleReplica, 107),
        (ErrorCode::FencedMemberEpoch, 110),
        (ErrorCode::UnreleasedInstanceId, 111),
        (ErrorCode::UnsupportedAssignor, 112),
        (ErrorCode::StaleMemberEpoch, 113),
        (ErrorCode::InvalidRecordState, 121),
        (ErrorCode::ShareSessionNotFound, 122),
        (ErrorCode::InvalidShareSessionEpoch, 123),
        (ErrorCode::InvalidRegularExpression, 128),
    ];

    #[test]
    fn wire_values_are_kafkas() {
        for (error, code) in WIRE {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(ErrorCode::try_from(code), Ok(error));
        }
        assert_eq!(ErrorCode::ALL.to_vec(), WIRE.map(|(error, _)| error).to_vec());
        assert_eq!(ErrorCode::from_code(4), None);
        assert_eq!(ErrorCode::try_from(i16::MAX), Err(i16::MAX));
    }
}

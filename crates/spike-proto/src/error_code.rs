//! SPIKE error codes (`sdk:errors/sentinel.go`, docs/protocol.md#limits).
//!
//! The code strings are what appears in the `err` (or Keeper `Err`) field of responses.
//! Unknown strings decode to [`ErrorCode::Other`] so a newer peer never breaks decoding.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($($variant:ident => $s:literal,)*) => {
        /// A SPIKE error code, serialized as its snake-case string.
        ///
        /// Servers only ever put [`ErrorCode::ApiBadRequest`], [`ErrorCode::ApiNotFound`],
        /// [`ErrorCode::ApiInternal`], [`ErrorCode::AccessUnauthorized`] and
        /// [`ErrorCode::StateNotReady`] into HTTP bodies; the rest exist for completeness.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $(
                #[doc = concat!("`", $s, "`")]
                $variant,
            )*
            /// Any code string not listed in docs/protocol.md#limits (kept verbatim).
            Other(String),
        }

        impl ErrorCode {
            /// Every known code, in docs/protocol.md#limits order (without [`ErrorCode::Other`]).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire string of this code.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $s,)*
                    ErrorCode::Other(s) => s,
                }
            }

            /// Maps a wire string to a code; unknown strings become [`ErrorCode::Other`].
            pub fn from_wire(s: &str) -> ErrorCode {
                match s {
                    $($s => ErrorCode::$variant,)*
                    other => ErrorCode::Other(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
GenGeneralFailure => "gen_general_failure",
GenNilContext => "gen_nil_context",
K8sReconciliationFailed => "k8s_reconciliation_failed",
K8sClientFailed => "k8s_client_failed",
K8sLookupFailed => "k8s_lookup_failed",
ApiBadRequest => "api_bad_request",
ApiEmptyPayload => "api_empty_payload",
ApiFound => "api_found",
ApiInternal => "api_internal_error",
ApiNotFound => "api_not_found",
ApiPostFailed => "api_post_failed",
ApiResponseCodeInvalid => "api_response_code_invalid",
ApiServerFault => "api_server_fault",
ObjectCreationFailed => "object_creation_failed",
EntityDeleted => "entity_deleted",
ObjectDeletionFailed => "object_deletion_failed",
EntityExists => "entity_exists",
EntityInvalid => "entity_invalid",
EntityLoadFailed => "entity_load_failed",
EntityNotFound => "entity_not_found",
EntityQueryFailed => "entity_query_failed",
EntitySaveFailed => "entity_save_failed",
EntityVersionInvalid => "entity_version_invalid",
EntityVersionNotFound => "entity_version_not_found",
ObjectUndeletionFailed => "object_undeletion_failed",
StateAlreadyInitialized => "state_already_initialized",
StateInitializationFailed => "state_initialization_failed",
StateNotAlive => "state_not_alive",
StateNotReady => "state_not_ready",
StateIntegrityCheck => "state_integrity_check",
AccessInvalidPermission => "access_invalid_permission",
AccessUnauthorized => "access_unauthorized",
RootKeyEmpty => "root_key_empty",
RootKeyMissing => "root_key_missing",
RootKeyNotEmpty => "root_key_not_empty",
RootKeySkipCreationForInMemoryMode => "root_key_skip_creation_for_in_memory_mode",
RootKeyUpdateSkippedKeyEmpty => "root_key_update_skipped_key_empty",
ShamirDuplicateIndex => "shamir_duplicate_index",
ShamirEmptyShard => "shamir_empty_shard",
ShamirInvalidIndex => "shamir_invalid_index",
ShamirNilShard => "shamir_nil_shard",
ShamirNotEnoughShards => "shamir_not_enough_shards",
ShamirReconstructionFailed => "shamir_reconstruction_failed",
ShamirNotEnoughKeepers => "shamir_not_enough_keepers",
CryptoCipherNotAvailable => "crypto_cipher_not_available",
CryptoCipherVerificationFailed => "crypto_cipher_verification_failed",
CryptoDecryptionFailed => "crypto_decryption_failed",
CryptoEncryptionFailed => "crypto_encryption_failed",
CryptoFailedToCreateCipher => "crypto_failed_to_create_cipher",
CryptoFailedToCreateGcm => "crypto_failed_to_create_gcm",
CryptoFailedToReadNonce => "crypto_failed_to_read_nonce",
CryptoFailedToReadVersion => "crypto_failed_to_read_version",
CryptoInvalidEncryptionKeyLength => "crypto_invalid_encryption_key_length",
CryptoLowEntropy => "crypto_low_entropy",
CryptoNonceGenerationFailed => "crypto_nonce_generation_failed",
CryptoNonceSizeMismatch => "crypto_nonce_size_mismatch",
CryptoRandomGenerationFailed => "crypto_random_generation_failed",
CryptoUnsupportedVersion => "crypto_unsupported_version",
StoreCloseFailed => "store_close_failed",
StoreInvalidConfiguration => "store_invalid_configuration",
StoreInvalidEncryptionKey => "store_invalid_encryption_key",
FsDirectoryCreationFailed => "fs_directory_creation_failed",
FsDirectoryDoesNotExist => "fs_directory_does_not_exist",
FsFailedToCheckDirectory => "fs_failed_to_check_directory",
FsFailedToCreateDirectory => "fs_failed_to_create_directory",
FsFailedToResolvePath => "fs_failed_to_resolve_path",
FsFileCloseFailed => "fs_file_close_failed",
FsFileIsNotADirectory => "fs_file_is_not_a_directory",
FsFileOpenFailed => "fs_file_open_failed",
FsInvalidDirectory => "fs_invalid_directory",
FsParentDirectoryDoesNotExist => "fs_parent_directory_does_not_exist",
FsPathCannotBeEmpty => "fs_path_cannot_be_empty",
FsPathRestricted => "fs_path_restricted",
FsStreamCloseFailed => "fs_stream_close_failed",
FsStreamReadFailed => "fs_stream_read_failed",
StreamWriteFailed => "stream_write_failed",
FsStreamOpenFailed => "fs_stream_open_failed",
DataInvalidInput => "data_invalid_input",
DataMarshalFailure => "data_marshal_failure",
DataParseFailure => "data_parse_failure",
DataReadFailure => "data_read_failure",
DataUnmarshalFailure => "data_unmarshal_failure",
StringEmptyCharacterClass => "string_empty_character_class",
StringEmptyCharacterSet => "string_empty_character_set",
StringInvalidLength => "string_invalid_length",
StringInvalidRange => "string_invalid_range",
StringNegativeLength => "string_negative_length",
NetPeerConnection => "net_peer_connection",
NetReadingRequestBody => "net_reading_request_body",
NetReadingResponseBody => "net_reading_response_body",
NetUrlJoinPathFailed => "net_url_join_path_failed",
TransactionBeginFailed => "transaction_begin_failed",
TransactionCommitFailed => "transaction_commit_failed",
TransactionFailed => "transaction_failed",
TransactionRollbackFailed => "transaction_rollback_failed",
RecoveryFailed => "recovery_failed",
RecoveryRetryFailed => "recovery_retry_failed",
RecoveryRetryLimitReached => "recovery_retry_limit_reached",
RetryContextCanceled => "retry_context_canceled",
RetryMaxElapsedTimeReached => "retry_max_elapsed_time_reached",
RetryOperationFailed => "retry_operation_failed",
RetryMaximumAttemptsReached => "retry_maximum_attempts_reached",
BootstrapKeeperUnreachable => "bootstrap_keeper_unreachable",
SpiffeEmptyTrustDomain => "spiffe_empty_trust_domain",
SpiffeFailedToCloseSource => "spiffe_failed_to_close_source",
SpiffeFailedToExtractX509Svid => "spiffe_failed_to_extract_x509_svid",
SpiffeInvalidSpiffeId => "spiffe_invalid_spiffe_id",
SpiffeInvalidTrustDomain => "spiffe_invalid_trust_domain",
SpiffeMultipleTrustDomains => "spiffe_multiple_trust_domains",
SpiffeNilX509Source => "spiffe_nil_x509_source",
SpiffeNoPeerCertificates => "spiffe_no_peer_certificates",
SpiffeUnableToFetchX509Source => "spiffe_unable_to_fetch_x509_source",
SystemMemLockFailed => "system_mem_lock_failed",}

impl ErrorCode {
    /// The HTTP status a Go client maps back to this code when it sees it as a status
    /// (docs/protocol.md#conventions), for the five codes servers emit; `None` for every other code.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ErrorCode::ApiBadRequest => Some(400),
            ErrorCode::AccessUnauthorized => Some(401),
            ErrorCode::ApiNotFound => Some(404),
            ErrorCode::ApiInternal => Some(500),
            ErrorCode::StateNotReady => Some(503),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ErrorCode {
    fn from(s: &str) -> Self {
        ErrorCode::from_wire(s)
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ErrorCode::from_wire(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips() {
        assert_eq!(ErrorCode::ALL.len(), 113);
        for code in ErrorCode::ALL {
            assert!(!matches!(code, ErrorCode::Other(_)));
            assert_eq!(&ErrorCode::from_wire(code.as_str()), code);
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, code);
        }
    }

    #[test]
    fn names_are_exact() {
        assert_eq!(ErrorCode::ApiInternal.as_str(), "api_internal_error");
        assert_eq!(ErrorCode::StreamWriteFailed.as_str(), "stream_write_failed");
        assert_eq!(ErrorCode::K8sLookupFailed.as_str(), "k8s_lookup_failed");
        assert_eq!(
            ErrorCode::SpiffeFailedToExtractX509Svid.as_str(),
            "spiffe_failed_to_extract_x509_svid"
        );
    }

    #[test]
    fn unknown_code_is_kept() {
        let c: ErrorCode = serde_json::from_str("\"brand_new_code\"").unwrap();
        assert_eq!(c, ErrorCode::Other("brand_new_code".into()));
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"brand_new_code\"");
    }

    #[test]
    fn escaped_strings_decode() {
        let c: ErrorCode = serde_json::from_str("\"api_not_\\u0066ound\"").unwrap();
        assert_eq!(c, ErrorCode::ApiNotFound);
    }
}

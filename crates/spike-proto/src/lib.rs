//! SPIKE 0.8 wire types, API paths, error codes and the SPIFFE-ID scheme.
//!
//! This crate is the single source of truth for what goes over the wire between the Go
//! SPIKE clients (the `spike` CLI, the Go SDK, bootstrap) and our Nexus and Keeper, and
//! back. It only depends on serde and a few pure helpers: no async runtime, no HTTP, no I/O
//! (the one exception is [`env::ProcessEnv`], a `std::env::var` behind the [`env::EnvSource`]
//! trait).
//!
//! Everything mirrors Go's `encoding/json` behaviour as described in docs/protocol.md#conventions:
//! `[]byte` is padded standard base64, shards are arrays of 32 integers, `map[int]X` is an
//! object with decimal-string keys, times are RFC 3339 with trimmed nanoseconds, unknown
//! fields are ignored and a `null` request body is the zero request. Decoding accepts the
//! exact (lowercase) field names that Go clients send; Go's case-insensitive field matching
//! is not reproduced.
//!
//! Known differences from Go's `encoding/json`, none visible to Go clients:
//!
//! * field names match exactly (Go also accepts other letter cases);
//! * a duplicate field in a request object is an error (Go keeps the last);
//! * `null` for a string or number field is an error (Go leaves the zero value);
//! * `map[int]X` keys are written in numeric order (Go sorts the key strings);
//! * `<`, `>`, `&` are written verbatim (Go escapes them as `\u003c` etc.).
//!
//! # Layout
//!
//! - [`paths`]: route paths, `?action=` values, the [`paths::Route`] table for Nexus
//!   (including which routes exist in `lite` mode) and [`paths::KeeperRoute`].
//! - [`error_code`]: [`ErrorCode`], every SPIKE error-code string (docs/protocol.md#limits).
//! - [`response`]: the [`response::ApiResponse`] trait (error bodies per docs/protocol.md#conventions),
//!   [`response::FallbackResponse`], the raw SDK-error body and [`decode_request`].
//! - [`secrets`]: secret put/get/delete/undelete/list/metadata types (docs/protocol.md#secrets).
//! - [`policy`]: policy put/get/delete/list types, [`policy::Permission`] and the reserved
//!   system resource paths (docs/protocol.md#policy-routes, docs/protocol.md#policies).
//! - [`operator`]: recover/restore types (docs/protocol.md#root-key-shards-and-recovery-files).
//! - [`bootstrap`]: bootstrap verify types (docs/protocol.md#bootstrap-and-keepers).
//! - [`cipher`]: JSON cipher types and stream-mode framing constants (docs/protocol.md#cipher).
//! - [`keeper`]: Keeper contribute/shard types (docs/protocol.md#bootstrap-and-keepers).
//! - [`serde_helpers`]: Go-compatible encodings: base64, [`ShardBytes`], `map[int]X`,
//!   [`Timestamp`] and the `err` field.
//! - [`validate`]: input validation rules (docs/protocol.md#secrets, docs/protocol.md#policy-routes, docs/protocol.md#conventions, docs/protocol.md#limits).
//! - [`spiffe_id`]: SPIFFE-ID builders, [`TrustRoots`] and role predicates (docs/protocol.md#identities-and-authorization).
//! - [`duration`]: Go durations (`parse_go_duration`, `format_go_duration`) as SPIKE's
//!   variables write them; shared by the daemons and the CLI.
//! - [`mod@env`]: the injectable environment ([`env::EnvSource`], [`env::ProcessEnv`],
//!   [`env::MapEnv`]) every loader reads `SPIKE_*` through; shared by the daemons and the CLI.
//! - [`error`]: the crate's error type, [`ProtoError`].

pub mod bootstrap;
pub mod cipher;
pub mod duration;
pub mod env;
pub mod error;
pub mod error_code;
pub mod keeper;
pub mod operator;
pub mod paths;
pub mod policy;
pub mod response;
pub mod secrets;
pub mod serde_helpers;
pub mod spiffe_id;
pub mod validate;

pub use error::ProtoError;
pub use error_code::ErrorCode;
pub use paths::{KeeperRoute, Route};
pub use response::{ApiResponse, decode_request};
pub use serde_helpers::{ShardBytes, Timestamp};
pub use spiffe_id::{Role, TrustRoot, TrustRoots};

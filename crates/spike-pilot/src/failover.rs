//! Several Nexus URLs: the failover rule, in one place.
//!
//! `SPIKE_NEXUS_API_URL`, `--nexus-url` and the `nexus_url` key take a comma-separated list
//! of Nexus instances that share one store ([`crate::config::parse_nexus_urls`]). Every
//! request of every command goes through [`run`], which applies this rule:
//!
//! 1. The URLs are tried in the order given; once an instance has answered, later requests
//!    of the same invocation start with it (then the others, in order). Nothing is
//!    remembered across invocations.
//! 2. A failure before the request was sent (TCP connect refused, unreachable or timed out,
//!    name resolution, TLS handshake failure, a server presenting the wrong SPIFFE ID or
//!    refusing ours; [`ClientError::is_unsent`]) moves on to the next URL, for every command.
//! 3. A failure after the request may have reached the server (connection broken after
//!    sending, timeout waiting for the answer) moves on only for a [`Call::Read`]. A
//!    [`Call::Write`] stops there: its outcome is unknown ([`Verdict::Unknown`]), because
//!    repeating it elsewhere could apply it twice (a second `secret put` would create an
//!    extra version).
//! 4. An HTTP 503 answer (sealed, not ready, store unavailable) moves on: that instance did
//!    nothing. Every other answer (200, 400, 401, 404, 500, 507, ...) is final.
//! 5. When no URL served the request, the error names each URL with its own cause.
//!
//! With a single URL nothing changes: the one error is reported as before. Each attempt has
//! the full per-request bounds of [`crate::session::Session`]; nothing is retried at the same
//! URL beyond what the client already does for a pooled connection that was found closed.

use std::future::Future;

use spike_client::ClientError;

use crate::errors::is_sealed;

/// Most Nexus URLs accepted in one list.
pub const MAX_NEXUS_URLS: usize = 16;

/// Whether a request may be repeated at another instance after it may have reached one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Changes nothing stored: secret get, list and metadata, policy get and list, status,
    /// cipher encrypt and decrypt, operator recover. Repeating it is harmless.
    Read,
    /// Changes stored state: secret put, delete and undelete, policy create, apply and delete.
    /// Sent to another instance only when it certainly did not reach the previous one.
    Write,
}

/// What one failed attempt at one URL means for the next URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The instance did nothing (not reached, or answered 503): try the next URL.
    Next,
    /// The answer, or a local error every URL would repeat: report it.
    Final,
    /// A write may have reached the instance: stop, its outcome is unknown.
    Unknown,
}

/// Applies the rule (module docs) to one failed attempt.
///
/// An HTTP 503 means the instance did nothing (sealed, or its database unreachable before
/// anything was written); a write whose commit its database did not confirm answers 504,
/// which is final like every other answer.
pub fn classify(err: &ClientError, call: Call) -> Verdict {
    if is_sealed(err) || err.status() == Some(503) {
        return Verdict::Next;
    }
    match err {
        // Local failures: the same at every URL.
        ClientError::Identity(_) | ClientError::InvalidUrl { .. } | ClientError::Encode { .. } => {
            Verdict::Final
        }
        e if e.is_unsent() => Verdict::Next,
        // Connection broken or timed out after the request was (maybe) written.
        e if e.is_unreachable() => match call {
            Call::Read => Verdict::Next,
            Call::Write => Verdict::Unknown,
        },
        _ => Verdict::Final,
    }
}

/// One URL that did not serve the request, by its position in the configured list.
#[derive(Debug)]
pub struct Skipped {
    /// The position of the URL in the configured list.
    pub index: usize,
    /// Why it did not serve.
    pub error: ClientError,
}

/// How a request over the URL list ended.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The instance at `index` answered: a success or a final error.
    Answered {
        /// The URL that answered.
        index: usize,
        /// Its answer.
        result: Result<T, ClientError>,
    },
    /// A write may have reached the instance at `index`; it was not repeated elsewhere.
    Unknown {
        /// The URL the write may have reached.
        index: usize,
        /// The failure.
        error: ClientError,
        /// The URLs tried before, each with its failure.
        earlier: Vec<Skipped>,
    },
    /// No URL served the request: each failure, in the order tried.
    Exhausted(Vec<Skipped>),
}

/// The order in which to try `count` URLs: `answered` (the instance that answered earlier in
/// this invocation) first, then the others in the configured order.
pub fn order(count: usize, answered: Option<usize>) -> Vec<usize> {
    let mut out = Vec::with_capacity(count);
    if let Some(first) = answered.filter(|i| *i < count) {
        out.push(first);
    }
    out.extend((0..count).filter(|i| Some(*i) != answered));
    out
}

/// Tries `attempt` at each URL of `order` (indices into the configured list) under the rule
/// of this module.
///
/// An `Ok` answer for which `unavailable` is true (e.g. a health report of a sealed
/// instance) moves on like a 503; if no later URL answers better, the first such answer is
/// the outcome.
pub async fn run<T, F, Fut, U>(
    order: &[usize],
    call: Call,
    mut attempt: F,
    unavailable: U,
) -> Outcome<T>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
    U: Fn(&T) -> bool,
{
    let mut skipped = Vec::new();
    let mut fallback: Option<(usize, T)> = None;
    for &index in order {
        match attempt(index).await {
            Ok(value) if unavailable(&value) => {
                if fallback.is_none() {
                    fallback = Some((index, value));
                }
            }
            Ok(value) => {
                return Outcome::Answered {
                    index,
                    result: Ok(value),
                };
            }
            Err(error) => match classify(&error, call) {
                Verdict::Next => skipped.push(Skipped { index, error }),
                Verdict::Final => {
                    return Outcome::Answered {
                        index,
                        result: Err(error),
                    };
                }
                Verdict::Unknown => {
                    return Outcome::Unknown {
                        index,
                        error,
                        earlier: skipped,
                    };
                }
            },
        }
    }
    match fallback {
        Some((index, value)) => Outcome::Answered {
            index,
            result: Ok(value),
        },
        None => Outcome::Exhausted(skipped),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::ErrorKind;
    use std::time::Duration;

    use spike_client::{PHASE_CONNECT, PHASE_HANDSHAKE, PHASE_REQUEST, PHASE_RESPONSE_HEADERS};
    use spike_proto::ErrorCode;

    use super::*;

    const U: &str = "https://nexus.test:8553";

    fn refused() -> ClientError {
        ClientError::Connect {
            url: U.into(),
            source: std::io::Error::from(ErrorKind::ConnectionRefused),
        }
    }

    fn timeout(phase: &'static str) -> ClientError {
        ClientError::Timeout {
            url: U.into(),
            phase,
            after: Duration::from_secs(1),
        }
    }

    fn not_ready() -> ClientError {
        ClientError::NotReady { url: U.into() }
    }

    fn peer(status: u16) -> ClientError {
        ClientError::Peer {
            url: U.into(),
            status,
        }
    }

    #[test]
    fn unsent_failures_move_on_for_every_call() {
        let unsent = [
            refused(),
            ClientError::Connect {
                url: U.into(),
                source: std::io::Error::other("failed to lookup address information"),
            },
            timeout(PHASE_CONNECT),
            timeout(PHASE_HANDSHAKE),
            ClientError::ServerRejected {
                url: U.into(),
                presented: Some("spiffe://spike.test/spike/keeper/1".into()),
                reason: "not authorized".into(),
            },
            ClientError::RejectedByServer {
                url: U.into(),
                alert: "BadCertificate".into(),
            },
            ClientError::ConnectionClosed { url: U.into() },
            not_ready(),
        ];
        for err in unsent {
            for call in [Call::Read, Call::Write] {
                assert_eq!(classify(&err, call), Verdict::Next, "{call:?} {err:?}");
            }
        }
    }

    #[test]
    fn maybe_sent_failures_move_on_only_for_reads() {
        for err in [timeout(PHASE_RESPONSE_HEADERS), timeout(PHASE_REQUEST)] {
            assert_eq!(classify(&err, Call::Read), Verdict::Next, "{err:?}");
            assert_eq!(classify(&err, Call::Write), Verdict::Unknown, "{err:?}");
        }
    }

    #[test]
    fn a_write_whose_commit_was_not_confirmed_is_never_sent_elsewhere() {
        // Nexus answers 504 (`backend_outcome_unknown`) when its database did not confirm a
        // commit; 503 only when nothing was written.
        assert_eq!(classify(&peer(504), Call::Write), Verdict::Final);
        assert_eq!(classify(&peer(503), Call::Write), Verdict::Next);
    }

    #[test]
    fn answers_and_local_errors_are_final() {
        let finals = [
            ClientError::NotFound { url: U.into() },
            ClientError::Unauthorized { url: U.into() },
            ClientError::BadRequest { url: U.into() },
            peer(500),
            peer(502),
            peer(507),
            ClientError::Api {
                url: U.into(),
                code: ErrorCode::EntityNotFound,
            },
            ClientError::ResponseTooLarge {
                url: U.into(),
                limit: 1,
            },
            ClientError::MissingField {
                url: U.into(),
                field: "shards",
            },
            ClientError::InvalidUrl {
                url: U.into(),
                reason: "x",
            },
        ];
        for err in finals {
            for call in [Call::Read, Call::Write] {
                assert_eq!(classify(&err, call), Verdict::Final, "{call:?} {err:?}");
            }
        }
        // A 503 by status alone moves on too (e.g. "backend unavailable").
        assert_eq!(classify(&peer(503), Call::Write), Verdict::Next);
    }

    #[test]
    fn order_starts_with_the_instance_that_answered() {
        assert_eq!(order(3, None), vec![0, 1, 2]);
        assert_eq!(order(3, Some(1)), vec![1, 0, 2]);
        assert_eq!(order(3, Some(2)), vec![2, 0, 1]);
        assert_eq!(order(1, Some(0)), vec![0]);
        assert_eq!(order(2, Some(7)), vec![0, 1]);
    }

    /// Runs [`run`] over canned answers, one per URL, recording the URLs tried.
    fn drive(answers: Vec<Result<u32, ClientError>>, call: Call) -> (Outcome<u32>, Vec<usize>) {
        let tried = RefCell::new(Vec::new());
        let answers = RefCell::new(answers.into_iter().map(Some).collect::<Vec<_>>());
        let urls: Vec<usize> = (0..answers.borrow().len()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcome = rt.block_on(run(
            &urls,
            call,
            |i| {
                tried.borrow_mut().push(i);
                let answer = answers.borrow_mut()[i].take().unwrap();
                async move { answer }
            },
            |_| false,
        ));
        (outcome, tried.into_inner())
    }

    #[test]
    fn a_write_moves_on_only_while_unsent() {
        let (outcome, tried) = drive(vec![Err(refused()), Ok(7), Ok(8)], Call::Write);
        assert!(
            matches!(
                outcome,
                Outcome::Answered {
                    index: 1,
                    result: Ok(7)
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(tried, vec![0, 1]);

        let (outcome, tried) = drive(
            vec![Err(refused()), Err(timeout(PHASE_RESPONSE_HEADERS)), Ok(8)],
            Call::Write,
        );
        match outcome {
            Outcome::Unknown {
                index: 1, earlier, ..
            } => {
                assert_eq!(earlier.len(), 1);
                assert_eq!(earlier[0].index, 0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(tried, vec![0, 1], "the write is not repeated at URL 2");

        let (outcome, tried) = drive(vec![Err(timeout(PHASE_REQUEST)), Ok(8)], Call::Read);
        assert!(
            matches!(
                outcome,
                Outcome::Answered {
                    index: 1,
                    result: Ok(8)
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(tried, vec![0, 1]);
    }

    #[test]
    fn sealed_moves_on_and_other_answers_stop() {
        let (outcome, tried) = drive(vec![Err(not_ready()), Ok(1)], Call::Write);
        assert!(matches!(outcome, Outcome::Answered { index: 1, .. }));
        assert_eq!(tried, vec![0, 1]);

        let (outcome, tried) = drive(
            vec![Err(ClientError::NotFound { url: U.into() }), Ok(1)],
            Call::Read,
        );
        assert!(
            matches!(
                outcome,
                Outcome::Answered {
                    index: 0,
                    result: Err(ClientError::NotFound { .. })
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(tried, vec![0]);
    }

    #[test]
    fn exhausted_keeps_every_cause_in_order() {
        let (outcome, tried) = drive(
            vec![
                Err(refused()),
                Err(not_ready()),
                Err(timeout(PHASE_HANDSHAKE)),
            ],
            Call::Write,
        );
        let Outcome::Exhausted(skipped) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(
            skipped.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(matches!(skipped[1].error, ClientError::NotReady { .. }));
        assert_eq!(tried, vec![0, 1, 2]);
    }

    #[test]
    fn unavailable_answers_move_on_but_stand_when_nothing_better() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // 0 = sealed report, 1 = refused, 2 = sealed report: the first report stands.
        let outcome = rt.block_on(run(
            &[0, 1, 2],
            Call::Read,
            |i| async move { if i == 1 { Err(refused()) } else { Ok(i) } },
            |_| true,
        ));
        assert!(
            matches!(
                outcome,
                Outcome::Answered {
                    index: 0,
                    result: Ok(0)
                }
            ),
            "{outcome:?}"
        );
        // A serving instance later in the list wins.
        let outcome = rt.block_on(run(
            &[0, 1],
            Call::Read,
            |i| async move { Ok(i) },
            |v: &usize| *v == 0,
        ));
        assert!(
            matches!(
                outcome,
                Outcome::Answered {
                    index: 1,
                    result: Ok(1)
                }
            ),
            "{outcome:?}"
        );
    }
}

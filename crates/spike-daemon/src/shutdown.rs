//! Shutdown: SIGTERM/SIGINT cancel a [`CancellationToken`], in-flight work gets a grace period,
//! and a daemon's named tasks stop together. This is the only module that handles signals.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::{JoinHandle, JoinSet};
pub use tokio_util::sync::CancellationToken;

/// A daemon's shutdown switch: a [`CancellationToken`] with names that say what it is for.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A switch that is not yet flipped.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The token to hand to tasks and to [`spawn_signal_handler`].
    #[must_use]
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has started.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started; pass it as `run(config, shutdown.wait())`.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }
}

impl From<CancellationToken> for Shutdown {
    fn from(token: CancellationToken) -> Self {
        Self { token }
    }
}

/// The signal that started shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSignal {
    /// SIGTERM (systemd's stop).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

impl fmt::Display for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShutdownSignal::Terminate => "SIGTERM",
            ShutdownSignal::Interrupt => "SIGINT",
        })
    }
}

/// Installs SIGTERM and SIGINT handlers now (before returning, so a signal that arrives right
/// after is caught) and spawns a task that cancels `token` on the first of them.
///
/// The task ends with `Some(signal)` after a signal, or `None` when `token` was cancelled by
/// something else. Once installed, the handlers stay for the life of the process: a second
/// signal no longer kills it, which keeps the grace period intact.
///
/// # Errors
///
/// The I/O error from registering a handler. Must be called inside a tokio runtime.
pub fn spawn_signal_handler(
    token: CancellationToken,
) -> std::io::Result<JoinHandle<Option<ShutdownSignal>>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let got = tokio::select! {
            _ = term.recv() => ShutdownSignal::Terminate,
            _ = int.recv() => ShutdownSignal::Interrupt,
            () = token.cancelled() => return None,
        };
        tracing::info!(signal = %got, "shutdown requested");
        token.cancel();
        Some(got)
    }))
}

/// The grace period ran out before the work finished; the work was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("in-flight work did not finish within the {grace:?} shutdown grace period")]
pub struct GraceExpired {
    /// The grace period that was given.
    pub grace: Duration,
}

/// Runs `fut` to completion; once `token` is cancelled, gives it at most `grace` more to finish
/// (it should notice the token itself, e.g. stop accepting and drain), then drops it.
///
/// # Errors
///
/// [`GraceExpired`] when `fut` was still running `grace` after cancellation.
pub async fn run_with_grace<F: Future>(
    fut: F,
    token: CancellationToken,
    grace: Duration,
) -> Result<F::Output, GraceExpired> {
    let mut fut = std::pin::pin!(fut);
    tokio::select! {
        biased;
        out = &mut fut => return Ok(out),
        () = token.cancelled() => {}
    }
    match tokio::time::timeout(grace, fut).await {
        Ok(out) => Ok(out),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "shutdown grace period expired; dropping in-flight work"
            );
            Err(GraceExpired { grace })
        }
    }
}

/// A failed named task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError<E> {
    /// The task returned an error.
    #[error("task {name} failed: {source}")]
    Failed {
        /// The task's name.
        name: &'static str,
        /// Its error.
        source: E,
    },
    /// The task panicked.
    #[error("task {name} panicked")]
    Panicked {
        /// The task's name.
        name: &'static str,
    },
    /// Some tasks did not stop within the grace period after cancellation.
    #[error(transparent)]
    Grace(#[from] GraceExpired),
}

/// A daemon as a list of named tasks (listener, SVID watcher, keeper sync, ...). The first task
/// to fail cancels the token shared by all; cancellation itself is not an error.
#[derive(Debug)]
pub struct Tasks<E> {
    token: CancellationToken,
    set: JoinSet<(&'static str, Result<(), E>)>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl<E: Send + 'static> Tasks<E> {
    /// An empty list whose tasks observe `token`.
    #[must_use]
    pub fn new(token: CancellationToken) -> Self {
        Self {
            token,
            set: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// Spawns `task(token)` under `name`. A task should return `Ok(())` when the token is
    /// cancelled.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let fut = task(self.token.clone());
        let handle = self.set.spawn(async move { (name, fut.await) });
        self.names.insert(handle.id(), name);
    }

    /// Waits for every task. The first failure (error or panic) cancels the others; after
    /// cancellation the remaining tasks get `grace` to finish and are aborted after that.
    ///
    /// # Errors
    ///
    /// The first task failure, or [`TaskError::Grace`] if the tasks outlived the grace period.
    pub async fn join(mut self, grace: Duration) -> Result<(), TaskError<E>> {
        let token = self.token.clone();
        let mut first: Option<TaskError<E>> = None;
        let drain = async {
            while let Some(joined) = self.set.join_next().await {
                let failure = match joined {
                    Ok((_, Ok(()))) => None,
                    Ok((name, Err(source))) => Some(TaskError::Failed { name, source }),
                    Err(e) if e.is_cancelled() => None,
                    Err(e) => Some(TaskError::Panicked {
                        name: self.names.get(&e.id()).copied().unwrap_or("(unnamed)"),
                    }),
                };
                if let Some(failure) = failure {
                    tracing::error!(error = %DisplayTaskError(&failure), "task failed; shutting down");
                    token.cancel();
                    if first.is_none() {
                        first = Some(failure);
                    }
                }
            }
        };
        let outcome = run_with_grace(drain, self.token.clone(), grace).await;
        self.set.abort_all();
        match (first, outcome) {
            (Some(failure), _) => Err(failure),
            (None, Err(grace)) => Err(TaskError::Grace(grace)),
            (None, Ok(())) => Ok(()),
        }
    }
}

struct DisplayTaskError<'a, E>(&'a TaskError<E>);

impl<E> fmt::Display for DisplayTaskError<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            TaskError::Failed { name, .. } => write!(f, "task {name} returned an error"),
            TaskError::Panicked { name } => write!(f, "task {name} panicked"),
            TaskError::Grace(g) => write!(f, "{g}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_returns_its_output() {
        let token = CancellationToken::new();
        assert_eq!(
            run_with_grace(async { 7 }, token, Duration::from_secs(1)).await,
            Ok(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_gets_the_grace_period_after_cancel() {
        let token = CancellationToken::new();
        token.cancel();
        let slow = tokio::time::sleep(Duration::from_secs(5));
        let start = tokio::time::Instant::now();
        let out = run_with_grace(slow, token.clone(), Duration::from_secs(10)).await;
        assert_eq!(out, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        let too_slow = tokio::time::sleep(Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        let out = run_with_grace(too_slow, token, Duration::from_secs(10)).await;
        assert_eq!(
            out,
            Err(GraceExpired {
                grace: Duration::from_secs(10)
            })
        );
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn grace_starts_at_cancellation_not_at_start() {
        let token = CancellationToken::new();
        let t2 = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            t2.cancel();
        });
        let start = tokio::time::Instant::now();
        let out = run_with_grace(
            tokio::time::sleep(Duration::from_secs(103)),
            token,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(out, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(103));
    }

    #[tokio::test(start_paused = true)]
    async fn first_task_error_cancels_the_rest() {
        let token = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(token.clone());
        tasks.spawn("listener", |t| async move {
            t.cancelled().await;
            Ok(())
        });
        tasks.spawn("keeper_sync", |_| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err("keeper unreachable".to_owned())
        });
        let err = tasks.join(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(err, TaskError::Failed { name: "keeper_sync", ref source } if source == "keeper unreachable"),
            "{err:?}"
        );
        assert!(token.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_is_not_an_error_but_stragglers_are_cut_off() {
        let token = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(token.clone());
        tasks.spawn("polite", |t| async move {
            t.cancelled().await;
            Ok(())
        });
        token.cancel();
        assert!(tasks.join(Duration::from_secs(5)).await.is_ok());

        let token = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(token.clone());
        tasks.spawn("deaf", |_| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        token.cancel();
        let err = tasks.join(Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, TaskError::Grace(_)), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_named_and_cancels_the_rest() {
        let token = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(token.clone());
        tasks.spawn("listener", |t| async move {
            t.cancelled().await;
            Ok(())
        });
        tasks.spawn("audit_flusher", |_| async move { panic!("boom") });
        let err = tasks.join(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(
                err,
                TaskError::Panicked {
                    name: "audit_flusher"
                }
            ),
            "{err:?}"
        );
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn shutdown_wrapper_flips_the_token() {
        let s = Shutdown::new();
        let wait = s.wait();
        assert!(!s.is_triggered());
        s.trigger();
        wait.await;
        assert!(s.token().is_cancelled());
    }
}

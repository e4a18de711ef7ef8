use std::time::Duration;

use nix::sys::signal::{Signal, raise};
use spike_daemon::shutdown::{Shutdown, ShutdownSignal, run_with_grace, spawn_signal_handler};

/// Both signals in one test, in sequence: a signal reaches every handler in the process, so two
/// tests raising signals concurrently would see each other's. No other test installs one.
#[tokio::test]
async fn sigterm_and_sigint_cancel_the_token() {
    // Handler first, then the signal: the process must survive its own SIGTERM.
    let shutdown = Shutdown::new();
    let handler = spawn_signal_handler(shutdown.token()).unwrap();
    let in_flight = {
        let token = shutdown.token();
        async move {
            token.cancelled().await;
            // Draining after cancellation takes a moment, well inside the grace period.
            tokio::time::sleep(Duration::from_millis(50)).await;
            "drained"
        }
    };
    raise(Signal::SIGTERM).unwrap();
    let out = run_with_grace(in_flight, shutdown.token(), Duration::from_secs(5)).await;
    assert_eq!(out, Ok("drained"));
    assert!(shutdown.is_triggered());
    let got = tokio::time::timeout(Duration::from_secs(5), handler)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(ShutdownSignal::Terminate));

    let shutdown = Shutdown::new();
    let handler = spawn_signal_handler(shutdown.token()).unwrap();
    raise(Signal::SIGINT).unwrap();
    tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
        .await
        .expect("SIGINT must cancel the token");
    assert_eq!(handler.await.unwrap(), Some(ShutdownSignal::Interrupt));

    // A handler whose token is cancelled by other means ends without a signal.
    let shutdown = Shutdown::new();
    let handler = spawn_signal_handler(shutdown.token()).unwrap();
    shutdown.trigger();
    assert_eq!(handler.await.unwrap(), None);
}

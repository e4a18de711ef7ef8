//! Shard sealing end to end in-process: a keeper restarted with the same state directory and
//! sealing key credential serves its shard again without a new contribution; a replaced
//! shard replaces the file; a file that does not open leaves the keeper empty and the file
//! untouched until a new shard arrives.

use std::path::Path;

use spike_daemon::MapEnv;
use spike_keeper::daemon::open_store;
use spike_keeper::sealing::{CREDENTIAL_NAME, SEALED_SHARD_FILE, SealingSettings, ShardSealing};
use spike_keeper::{KeeperConfig, ShardStore};
use spike_proto::ShardBytes;

use crate::support::{Running, client, config, start_keeper_with, world};

fn sealed_config(state: &Path) -> KeeperConfig {
    KeeperConfig {
        sealing: SealingSettings::parse(ShardSealing::Host, &[]).unwrap(),
        keeper_id: Some("1".to_owned()),
        state_directory: Some(state.to_owned()),
        ..config()
    }
}

fn store(state: &Path, creds: &Path) -> (ShardStore, &'static str) {
    let env = MapEnv::new().with("CREDENTIALS_DIRECTORY", creds.to_str().unwrap());
    open_store(&sealed_config(state), &env).unwrap()
}

async fn stop(mut k: Running) {
    k.token.cancel();
    (&mut k.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_restarted_keeper_serves_its_sealed_shard_and_a_bad_file_is_kept_untouched() {
    let w = world().await;
    let state = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join(CREDENTIAL_NAME), [0x5a; 32]).unwrap();
    let file = state.path().join(SEALED_SHARD_FILE);

    let (s, status) = store(state.path(), creds.path());
    assert_eq!(status, "no shard yet (shard sealing on)");
    let k = start_keeper_with(&w.wl, s).await;
    client(&w.nexus, &k.url)
        .contribute(ShardBytes::new([42; 32]))
        .await
        .unwrap();
    stop(k).await;
    let sealed = std::fs::read(&file).unwrap();
    assert!(
        !sealed.windows(32).any(|win| win == [42; 32]),
        "shard in clear on disk"
    );

    // Restart: restored before serving, no contribution needed.
    let (s, status) = store(state.path(), creds.path());
    assert_eq!(status, "shard restored from its sealed file");
    let k = start_keeper_with(&w.wl, s).await;
    let nexus = client(&w.nexus, &k.url);
    assert_eq!(nexus.shard().await.unwrap().as_bytes(), &[42; 32]);
    // A re-key: the new shard replaces the file.
    nexus.contribute(ShardBytes::new([43; 32])).await.unwrap();
    stop(k).await;
    let (s, _) = store(state.path(), creds.path());
    assert_eq!(s.get().unwrap().expose_secret(), &[43; 32]);

    // Tampered: empty, the file kept as it is; a new shard then replaces it.
    let mut bad = std::fs::read(&file).unwrap();
    bad[40] ^= 1;
    std::fs::write(&file, &bad).unwrap();
    let (s, status) = store(state.path(), creds.path());
    assert!(status.contains("does not open"), "{status}");
    let k = start_keeper_with(&w.wl, s).await;
    let nexus = client(&w.nexus, &k.url);
    assert!(
        nexus.shard().await.is_err(),
        "served a shard from a tampered file"
    );
    assert_eq!(std::fs::read(&file).unwrap(), bad);
    nexus.contribute(ShardBytes::new([44; 32])).await.unwrap();
    stop(k).await;
    assert_ne!(std::fs::read(&file).unwrap(), bad);

    // Another sealing key (the credential was re-created): empty, file kept.
    std::fs::write(creds.path().join(CREDENTIAL_NAME), [0x6b; 32]).unwrap();
    let before = std::fs::read(&file).unwrap();
    let (s, status) = store(state.path(), creds.path());
    assert!(
        status.contains("does not open") && !s.has_shard(),
        "{status}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[tokio::test]
async fn sealing_without_its_credential_or_id_refuses_to_start() {
    let state = tempfile::tempdir().unwrap();
    let err = open_store(&sealed_config(state.path()), &MapEnv::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("LoadCredentialEncrypted="), "{err}");
    let no_id = KeeperConfig {
        keeper_id: None,
        ..sealed_config(state.path())
    };
    let err = open_store(&no_id, &MapEnv::new()).unwrap_err().to_string();
    assert!(err.contains("SPIKE_KEEPER_ID"), "{err}");
    // Off needs nothing.
    let (s, status) = open_store(&config(), &MapEnv::new()).unwrap();
    assert!(!s.is_sealed() && status.contains("RAM only"));
}

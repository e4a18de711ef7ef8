//! The Pilot side of the shared test cluster ([`spike_testkit::cluster`]): the world serves
//! Nexus, the keepers, bootstrap and the Pilot roles from one Workload API server, plus one
//! extra server per Pilot role for Go processes (they take the first SVID they get). A
//! [`Cluster`] is three in-process keepers and an in-process SQLite Nexus, bootstrapped by hand.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spike_crypto::{RootKey, shamir};
use spike_nexus::config::{Config, ConfigFile};
use spike_testkit::WorkloadApiServer;
use spike_testkit::cluster::{self, BOOTSTRAP, KEEPERS, KeeperHandle, NEXUS, SHARES, urls};

pub(crate) use spike_testkit::cluster::{
    NexusHandle, RECOVER, RESTORE, SUPERUSER, THRESHOLD, TRUST_DOMAIN, eventually,
};

/// The shared [`cluster::World`] and one single-identity server per Pilot role.
pub(crate) struct World {
    inner: cluster::World,
    roles: BTreeMap<&'static str, WorkloadApiServer>,
}

impl Deref for World {
    type Target = cluster::World;

    fn deref(&self) -> &cluster::World {
        &self.inner
    }
}

impl World {
    /// Must be called inside a Tokio runtime (the Workload API servers are tasks).
    pub(crate) fn new() -> World {
        let mut paths = vec![NEXUS, BOOTSTRAP, SUPERUSER, RECOVER, RESTORE];
        paths.extend(KEEPERS);
        let inner = cluster::World::serving(&paths, tempfile::tempdir().unwrap()).unwrap();
        let roles = [SUPERUSER, RECOVER, RESTORE]
            .into_iter()
            .map(|role| {
                let id = inner.pki.id(role);
                let server =
                    WorkloadApiServer::start_in_tempdir(&inner.pki, &[id.as_str()]).unwrap();
                (role, server)
            })
            .collect();
        World { inner, roles }
    }

    /// `unix://<socket>` of the server serving every identity.
    pub(crate) fn endpoint(&self) -> String {
        unix_url(self.wl.socket_path())
    }

    /// `unix://<socket>` of the server serving only `role` (SUPERUSER, RECOVER or RESTORE).
    pub(crate) fn role_endpoint(&self, role: &str) -> String {
        unix_url(self.roles[role].socket_path())
    }

    /// The shared test configuration for SQLite in `data` on `keepers`, without a metrics
    /// listener and with the default body limit.
    fn nexus_config(keepers: &[String], data: &Path) -> Config {
        Config::try_from(ConfigFile {
            metrics_listen: String::new(),
            request_body_limit: ConfigFile::default().request_body_limit,
            ..cluster::test_config_file("sqlite", keepers, data)
        })
        .unwrap()
    }

    pub(crate) async fn start_nexus(&self, keepers: &[String], data: &Path) -> NexusHandle {
        self.inner
            .start_nexus(World::nexus_config(keepers, data))
            .await
            .unwrap()
    }

    pub(crate) async fn start_keepers(&self) -> Vec<KeeperHandle> {
        self.inner.start_keepers(KEEPERS.len()).await.unwrap()
    }

    /// Bootstraps by hand as SPIKE Bootstrap does: a fresh root key, split 3/2, shard `i`
    /// contributed to keeper `i` (keeper ids are 1-based list positions) with the Bootstrap
    /// SVID. Nexus then recovers the key from the keepers on its own.
    pub(crate) async fn bootstrap(&self, keepers: &[KeeperHandle]) -> RootKey {
        let key = RootKey::generate().unwrap();
        self.inner
            .seed_keepers(keepers, &key, THRESHOLD)
            .await
            .unwrap();
        key
    }
}

fn unix_url(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// The recovery text of every shard of `key`: `spike:<id>:<hex>` by id.
pub(crate) fn shard_texts(key: &RootKey) -> BTreeMap<u16, String> {
    shamir::split(key, SHARES, THRESHOLD)
        .unwrap()
        .iter()
        .map(|s| {
            (
                s.id(),
                spike_crypto::shard_text::format(s).as_str().to_owned(),
            )
        })
        .collect()
}

/// Three keepers and a SQLite Nexus on them.
pub(crate) struct Cluster {
    pub(crate) keepers: Vec<KeeperHandle>,
    pub(crate) nexus: NexusHandle,
    pub(crate) data: PathBuf,
}

impl Cluster {
    /// Fresh keepers and a fresh Nexus (sealed, never bootstrapped).
    pub(crate) async fn start(w: &World, name: &str) -> Cluster {
        let data = w.path(name);
        let keepers = w.start_keepers().await;
        let nexus = w.start_nexus(&urls(&keepers), &data).await;
        Cluster {
            keepers,
            nexus,
            data,
        }
    }

    /// A fresh cluster bootstrapped by hand and unsealed; returns the root key too.
    pub(crate) async fn bootstrapped(w: &World, name: &str) -> (Cluster, RootKey) {
        let c = Cluster::start(w, name).await;
        let key = w.bootstrap(&c.keepers).await;
        c.nexus
            .wait_unsealed(Duration::from_secs(30))
            .await
            .unwrap();
        (c, key)
    }

    /// Stops everything, then starts three empty keepers and a Nexus on the same database:
    /// initialized but sealed until an operator restores the key.
    pub(crate) async fn restart_with_empty_keepers(self, w: &World) -> Cluster {
        let Cluster {
            keepers,
            nexus,
            data,
        } = self;
        nexus.stop().await.unwrap();
        for k in keepers {
            k.stop().await.unwrap();
        }
        let keepers = w.start_keepers().await;
        let nexus = w.start_nexus(&urls(&keepers), &data).await;
        Cluster {
            keepers,
            nexus,
            data,
        }
    }

    pub(crate) async fn stop(self) {
        self.nexus.stop().await.unwrap();
        for k in self.keepers {
            k.stop().await.unwrap();
        }
    }
}

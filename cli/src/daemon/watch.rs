//! The API server's watch cache: the store's recent changes, kept so that
//! a client that listed at `resourceVersion` N can watch from N without
//! missing what changed in between (kubectl lists, then watches), and a
//! broadcast that fans each change out to the open watches.
//!
//! A watch from a version older than the cache holds is refused as
//! `410 Expired`, as the API server does; the client lists again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use berth_scheduler::{Store, WatchEvent};
use tokio::sync::broadcast;

/// How many recent changes are kept for watches that resume.
const KEPT: usize = 4096;

/// The cache. Shared behind an `Arc`.
#[derive(Debug)]
pub struct WatchCache {
    inner: Mutex<Recent>,
    fan_out: broadcast::Sender<Arc<Change>>,
}

/// One change with its `resourceVersion`.
#[derive(Debug)]
pub struct Change {
    /// The store's version after the change.
    pub version: u64,
    /// The change.
    pub event: WatchEvent,
}

#[derive(Debug)]
struct Recent {
    changes: VecDeque<Arc<Change>>,
    /// Every change after this version is in `changes`.
    floor: u64,
    /// How many changes are kept.
    kept: usize,
}

/// Where a new watch starts.
pub enum Start {
    /// The kept changes after the requested version, then live ones.
    Resume(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>),
    /// The requested version is older than what is kept.
    Expired,
}

fn version_of(event: &WatchEvent) -> u64 {
    event
        .object
        .metadata()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl WatchCache {
    /// A cache fed from `store` by a task that ends when the store's watch
    /// does. Call inside a Tokio runtime.
    pub fn start(store: &Store) -> Arc<WatchCache> {
        WatchCache::keeping(store, KEPT)
    }

    /// [`WatchCache::start`], keeping `kept` changes.
    fn keeping(store: &Store, kept: usize) -> Arc<WatchCache> {
        let mut changes = store.watch();
        let floor = store.resource_version().unwrap_or(0);
        let (fan_out, _) = broadcast::channel(kept.max(1));
        let cache = Arc::new(WatchCache {
            inner: Mutex::new(Recent {
                changes: VecDeque::new(),
                floor,
                kept,
            }),
            fan_out,
        });
        let feed = Arc::clone(&cache);
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(event) => feed.push(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => feed.forget(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        cache
    }

    fn push(&self, event: WatchEvent) {
        let change = Arc::new(Change {
            version: version_of(&event),
            event,
        });
        let mut recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if change.version <= recent.floor {
            return;
        }
        if recent.changes.len() >= recent.kept
            && let Some(oldest) = recent.changes.pop_front()
        {
            recent.floor = oldest.version;
        }
        recent.changes.push_back(Arc::clone(&change));
        // Sent under the lock, so that a watch starting now sees each
        // change exactly once: in the kept list or on its receiver.
        let _ = self.fan_out.send(change);
    }

    /// Changes were dropped: nothing kept can be trusted to be complete.
    fn forget(&self) {
        let mut recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let newest = recent.changes.back().map(|c| c.version).unwrap_or(0);
        recent.changes.clear();
        recent.floor = recent.floor.max(newest);
    }

    /// Live changes from now on (for a watch that lists first).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        let _recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        self.fan_out.subscribe()
    }

    /// The changes after `version`, then live ones.
    pub fn resume(&self, version: u64) -> Start {
        let recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if version < recent.floor {
            return Start::Expired;
        }
        let kept = recent
            .changes
            .iter()
            .filter(|c| c.version > version)
            .cloned()
            .collect();
        Start::Resume(kept, self.fan_out.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_scheduler::Object;
    use berth_scheduler::k8s_openapi::api::core::v1::Namespace;

    fn namespace(name: &str) -> Object {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.to_owned());
        Object::Namespace(namespace)
    }

    async fn settled(cache: &WatchCache, newest: u64) {
        for _ in 0..500 {
            let seen = {
                let recent = cache.inner.lock().unwrap_or_else(PoisonError::into_inner);
                recent.changes.back().is_some_and(|c| c.version == newest)
            };
            if seen {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the cache did not see version {newest}");
    }

    #[tokio::test]
    async fn a_watch_resumes_after_a_version_or_is_told_it_expired() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("state.redb")).expect("store");
        let cache = WatchCache::keeping(&store, 2);
        for name in ["a", "b", "c", "d"] {
            store.apply(vec![namespace(name)]).expect("apply");
        }
        let newest = store.resource_version().expect("version");
        settled(&cache, newest).await;
        match cache.resume(newest - 1) {
            Start::Resume(kept, _) => {
                assert_eq!(kept.len(), 1);
                assert_eq!(kept[0].event.object.name(), "d");
            }
            Start::Expired => panic!("the newest change is kept"),
        }
        assert!(matches!(cache.resume(0), Start::Expired));
        let Start::Resume(kept, mut live) = cache.resume(newest) else {
            panic!("a watch from now is never expired");
        };
        assert!(kept.is_empty());
        store.apply(vec![namespace("e")]).expect("apply");
        let change = tokio::time::timeout(std::time::Duration::from_secs(10), live.recv())
            .await
            .expect("a live change in time")
            .expect("a change");
        assert_eq!(change.event.object.name(), "e");
        assert_eq!(change.version, newest + 1);
    }
}

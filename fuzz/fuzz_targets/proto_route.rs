//! Route lookup: `action_from_query` on an arbitrary raw query, then `Route::parse`,
//! `Route::parse_for` and `KeeperRoute::parse` on an arbitrary path.
//!
//! Input: `path` `?` `query` (split at the first `?`, as a URL is).

#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_proto::paths::{self, KeeperRoute, Route};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let action = paths::action_from_query(query);
    let _ = paths::bypasses_readiness_gate(path);
    let _ = spike_proto::cipher::is_stream_mode(Some(text));
    if let Some(route) = Route::parse(path, action.as_deref()) {
        assert_eq!(route.path(), path);
        let lite = Route::parse_for(true, path, action.as_deref());
        assert!(lite.is_none() || lite == Some(route));
        assert_eq!(
            Route::parse_for(false, path, action.as_deref()),
            Some(route)
        );
        // The canonical URL of the route parses back to it.
        let canonical = route.path_and_query();
        let (p, q) = match canonical.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (&*canonical, None),
        };
        assert_eq!(
            Route::parse(p, paths::action_from_query(q).as_deref()),
            Some(route)
        );
    }
    if let Some(route) = KeeperRoute::parse(path, action.as_deref()) {
        assert_eq!(route.path(), path);
    }
});

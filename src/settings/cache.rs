//! A per-instance cache of each user's settings per scope, bounded in entries (moka), kept
//! coherent by the change feed: this instance's writes invalidate at commit, and on
//! PostgreSQL every other instance's writes invalidate as soon as their notification arrives
//! (`listen.rs`); the echo of this instance's own notification drops nothing. The shared
//! write statements notify from inside their transaction, so their echo may come back before
//! the writer has taken in its answer: a notice heard for a user this instance is writing waits
//! until one of those writes ends (`SettingsCache::writing`), and is only then told apart from
//! another instance's. A read that raced a write never stores what it read: each user hashes
//! to a generation that every invalidation bumps, and a read keeps its result only if the
//! generation did not move while it read. A checked update that knows the settings it left
//! keeps them instead (`SettingsCache::written`), under the same check. When the listening
//! connection drops, the whole cache is dropped, since notifications may have been missed.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use metrics::Counter;
use moka::sync::Cache;

use super::Setting;

/// Generations, each shared by the users that hash to it. A write keeps what it left only if
/// its user's generation did not move during the write, so a write of another user of the
/// same stripe drops it: with 16,384 stripes, 300 users writing at once share a stripe with
/// another about 2 % of the time (with 1,024, a quarter).
const STRIPES: usize = 16 * 1024;

/// A user's settings in one scope as read, ordered by key. Each setting is shared, so that
/// the settings a write left share the unchanged ones with the settings it read.
#[derive(Clone, Default)]
pub(super) struct Snapshot {
    pub settings: Arc<Vec<Arc<Setting>>>,
    /// The user's feed position when they were read, which every commit of the user's
    /// settings moves (PostgreSQL; `None` where unknown).
    pub position: Option<i64>,
    /// The bytes of the values' compact JSON text, by which the cache weighs them; `None`
    /// until the cache counts them.
    pub value_bytes: Option<usize>,
}

impl Snapshot {
    /// Settings as read, their bytes not yet counted.
    pub fn new(settings: Vec<Arc<Setting>>, position: Option<i64>) -> Self {
        Snapshot {
            settings: Arc::new(settings),
            position,
            value_bytes: None,
        }
    }

    fn value_bytes(&self) -> usize {
        self.value_bytes.unwrap_or_else(|| {
            let size = |s: &Arc<Setting>| super::value::serialized_len(&s.value);
            self.settings.iter().map(size).sum()
        })
    }
}

/// The settings a write left, to replace the cached ones when it is published: what was
/// read, with the written settings in place, when the user's feed position shows that nothing
/// else committed between the read and the write.
pub(super) struct AfterWrite {
    /// The user's generation before the write was sent.
    pub generation: u64,
    pub snapshot: Snapshot,
}

pub(super) struct SettingsCache {
    entries: Cache<(String, String), Snapshot>,
    generations: Box<[AtomicU64]>,
    /// Off while other instances' changes cannot be heard (PostgreSQL without a listening
    /// connection): reads then go to the database.
    coherent: AtomicBool,
    /// This instance's own commits by user, scope and feed position, until their notice comes
    /// back through the channel: the commit already dropped those settings here, and what was
    /// read since is current, so the echo must not drop it again.
    own_commits: Cache<(String, String, i64), ()>,
    /// The users this instance is writing, with the notices heard for them meanwhile.
    writing: Mutex<HashMap<String, Held>>,
    /// The counters of hits and misses, registered at the first look-up (when the application
    /// has installed the recorder) rather than found in the recorder for every read.
    lookups: OnceLock<[Counter; 2]>,
}

/// A user's writes in flight on this instance, and the notices (scope, position) heard for
/// the user since one of them last ended.
#[derive(Default)]
struct Held {
    writes: usize,
    notices: Vec<(String, i64)>,
}

/// One write of a user in flight; dropping it ends it ([`SettingsCache::writing`]) and applies
/// the notices held for the user: those of the writes that ended were recorded as their own
/// (`SettingsCache::committed_here`), and drop nothing. A notice waits for the first write
/// that ends, not for the last, so that a user written without pause still hears other
/// instances' commits; the echo of a write still in flight then drops the user's settings, which
/// costs a read, never a stale one.
pub(super) struct Writing<'c> {
    cache: &'c SettingsCache,
    user_id: String,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let notices = {
            let mut writing = self.cache.lock_writing();
            let Some(held) = writing.get_mut(&self.user_id) else {
                return;
            };
            held.writes -= 1;
            let notices = std::mem::take(&mut held.notices);
            if held.writes == 0 {
                writing.remove(&self.user_id);
            }
            notices
        };
        for (scope, position) in notices {
            self.cache.apply_notice(&self.user_id, &scope, position);
        }
    }
}

impl SettingsCache {
    /// A cache of about `bytes` of settings; `None` for 0: every read goes to the database.
    pub fn new(bytes: u64) -> Option<Self> {
        (bytes > 0).then(|| SettingsCache {
            entries: Cache::builder()
                .max_capacity(bytes)
                .weigher(|(user, scope): &(String, String), snapshot: &Snapshot| {
                    let keys: usize = snapshot.settings.iter().map(|s| s.key.len() + 160).sum();
                    let size = keys + snapshot.value_bytes();
                    u32::try_from(user.len() + scope.len() + 64 + size).unwrap_or(u32::MAX)
                })
                // The bound on staleness should a notification of another instance be lost.
                .time_to_live(std::time::Duration::from_secs(60))
                .support_invalidation_closures()
                .build(),
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            coherent: AtomicBool::new(true),
            // An echo comes within milliseconds; one that never comes (the notice was dropped)
            // leaves its entry until then, and an echo that comes later still drops the settings.
            own_commits: Cache::builder()
                .max_capacity(super::listen::NOTIFY_BACKLOG as u64)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            writing: Mutex::new(HashMap::new()),
            lookups: OnceLock::new(),
        })
    }

    fn lock_writing(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write of the user starts, which may notify from inside its statement: until it ends
    /// (the returned guard is dropped, after the write recorded its commit and updated the
    /// cache), notices heard for the user wait, so that its own echo cannot drop what it left.
    pub fn writing(&self, user_id: &str) -> Writing<'_> {
        self.lock_writing()
            .entry(user_id.to_owned())
            .or_default()
            .writes += 1;
        Writing {
            cache: self,
            user_id: user_id.to_owned(),
        }
    }

    /// Whether other instances' changes are heard; dropping everything when they no longer are.
    pub fn set_coherent(&self, coherent: bool) {
        self.coherent.store(coherent, Ordering::Release);
        if !coherent {
            self.clear();
        }
    }

    fn stripe(&self, user_id: &str) -> &AtomicU64 {
        let mut hasher = DefaultHasher::new();
        user_id.hash(&mut hasher);
        &self.generations[hasher.finish() as usize % STRIPES]
    }

    /// What a read must present to store its result.
    pub fn generation(&self, user_id: &str) -> u64 {
        self.stripe(user_id).load(Ordering::Acquire)
    }

    pub fn get(&self, user_id: &str, scope: &str) -> Option<Snapshot> {
        if !self.coherent.load(Ordering::Acquire) {
            return None;
        }
        let hit = self.entries.get(&(user_id.to_owned(), scope.to_owned()));
        let lookups = self.lookups.get_or_init(|| {
            let counter =
                |result| metrics::counter!("settings_api_cache_lookups_total", "result" => result);
            [counter("hit"), counter("miss")]
        });
        lookups[usize::from(hit.is_none())].increment(1);
        hit
    }

    /// Stores a read, unless the user's settings changed since `generation` was taken.
    pub fn put(&self, user_id: &str, scope: &str, generation: u64, snapshot: Snapshot) {
        if self.coherent.load(Ordering::Acquire) && self.generation(user_id) == generation {
            self.insert_at(user_id, scope, generation, snapshot);
        }
    }

    /// Inserts an entry valid at `generation`; an invalidation that came after the caller
    /// checked the generation removes it again.
    fn insert_at(&self, user_id: &str, scope: &str, generation: u64, mut snapshot: Snapshot) {
        // Counted once here rather than by the weigher, so that every copy handed out has it.
        snapshot.value_bytes = Some(snapshot.value_bytes());
        let entry = (user_id.to_owned(), scope.to_owned());
        self.entries.insert(entry.clone(), snapshot);
        if self.generation(user_id) != generation {
            self.entries.invalidate(&entry);
        }
    }

    /// This instance committed a write of the user's settings in `scope`: keeps what the
    /// write left when it knows it and nothing invalidated the user since the write was sent;
    /// otherwise drops the settings, as [`SettingsCache::invalidate`].
    pub fn written(&self, user_id: &str, scope: &str, after: Option<&AfterWrite>) {
        let stripe = self.stripe(user_id);
        // Moving the generation on keeps reads that were in flight during the write from
        // storing what they read.
        let kept = after.filter(|after| {
            self.coherent.load(Ordering::Acquire)
                && stripe
                    .compare_exchange(
                        after.generation,
                        after.generation + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
        });
        match kept {
            Some(after) => {
                let snapshot = after.snapshot.clone();
                self.insert_at(user_id, scope, after.generation + 1, snapshot);
            }
            None => self.invalidate(user_id, scope),
        }
    }

    /// The user's settings in `scope` changed.
    pub fn invalidate(&self, user_id: &str, scope: &str) {
        self.stripe(user_id).fetch_add(1, Ordering::AcqRel);
        self.entries
            .invalidate(&(user_id.to_owned(), scope.to_owned()));
    }

    /// This instance committed a change of the user's settings in `scope`, up to `position`,
    /// and is about to tell the other instances.
    pub fn committed_here(&self, user_id: &str, scope: &str, position: i64) {
        self.own_commits
            .insert((user_id.to_owned(), scope.to_owned(), position), ());
    }

    /// A notice of a commit came through the channel: another instance's commit drops the
    /// settings; this instance's own dropped them when it committed. While this instance is
    /// writing the user, the notice waits for one of those writes to end.
    pub fn heard(&self, user_id: &str, scope: &str, position: i64) {
        if let Some(held) = self.lock_writing().get_mut(user_id) {
            held.notices.push((scope.to_owned(), position));
            return;
        }
        self.apply_notice(user_id, scope, position);
    }

    fn apply_notice(&self, user_id: &str, scope: &str, position: i64) {
        let commit = (user_id.to_owned(), scope.to_owned(), position);
        if self.own_commits.remove(&commit).is_none() {
            self.invalidate(user_id, scope);
        }
    }

    /// Every scope of the user (erased).
    pub fn invalidate_user(&self, user_id: &str) {
        self.stripe(user_id).fetch_add(1, Ordering::AcqRel);
        let user_id = user_id.to_owned();
        // Erasure is rare; a scan of the entries is fine for it.
        let _ = self
            .entries
            .invalidate_entries_if(move |(user, _), _| *user == user_id);
    }

    /// Anything may have changed.
    pub fn clear(&self) {
        for generation in self.generations.iter() {
            generation.fetch_add(1, Ordering::AcqRel);
        }
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(value: i64) -> Snapshot {
        let settings = Arc::new(vec![Arc::new(Setting {
            user_id: "alice".into(),
            key: "k".into(),
            scope: String::new(),
            value: value.into(),
            version: 1,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            expires_at: None,
        })]);
        Snapshot {
            settings,
            position: Some(value),
            value_bytes: None,
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = SettingsCache::new(1 << 20).unwrap();
        let before = cache.generation("alice");
        // A write commits and invalidates while the read is in flight.
        cache.invalidate("alice", "");
        cache.put("alice", "", before, list(1));
        assert!(cache.get("alice", "").is_none());
        // A read that did not race is kept, until the next write.
        let now = cache.generation("alice");
        cache.put("alice", "", now, list(2));
        assert_eq!(cache.get("alice", "").unwrap().settings[0].value, 2);
        cache.invalidate("alice", "");
        assert!(cache.get("alice", "").is_none());
    }

    #[test]
    fn the_echo_of_an_own_commit_keeps_what_was_read_since_and_another_instances_commit_drops_it() {
        let cache = SettingsCache::new(1 << 20).unwrap();
        // This instance commits at position 7, then reads the settings again.
        cache.invalidate("alice", "");
        cache.committed_here("alice", "", 7);
        cache.put("alice", "", cache.generation("alice"), list(1));
        cache.heard("alice", "", 7);
        assert_eq!(cache.get("alice", "").unwrap().settings[0].value, 1);
        // Another instance's commit, and an echo heard twice, drop it.
        cache.heard("alice", "", 8);
        assert!(cache.get("alice", "").is_none());
        cache.put("alice", "", cache.generation("alice"), list(2));
        cache.heard("alice", "", 7);
        assert!(cache.get("alice", "").is_none());
        // The scope is part of the commit.
        cache.committed_here("alice", "a", 9);
        cache.put("alice", "b", cache.generation("alice"), list(3));
        cache.heard("alice", "b", 9);
        assert!(cache.get("alice", "b").is_none());
    }

    /// What the write of `position` left, recorded as the write does before it ends.
    fn write_ends(cache: &SettingsCache, writing: Writing<'_>, generation: u64, position: i64) {
        let after = AfterWrite {
            generation,
            snapshot: list(position),
        };
        cache.written("alice", "", Some(&after));
        cache.committed_here("alice", "", position);
        drop(writing);
    }

    #[test]
    fn a_notice_heard_while_this_instance_writes_the_user_waits_for_a_write_to_end() {
        let cache = SettingsCache::new(1 << 20).unwrap();
        // The echo of Alice's write (position 8) comes back before the write took in its
        // answer; it waits, and then drops nothing.
        let writing = cache.writing("alice");
        let sent = cache.generation("alice");
        let bob = cache.generation("bob");
        cache.heard("alice", "", 8);
        cache.heard("bob", "", 3);
        assert_eq!(cache.generation("alice"), sent, "held");
        assert_ne!(
            cache.generation("bob"),
            bob,
            "another user's notice applies at once"
        );
        write_ends(&cache, writing, sent, 8);
        assert_eq!(cache.get("alice", "").unwrap().settings[0].value, 8);
        // Once no write is in flight, notices apply at once.
        cache.heard("alice", "", 9);
        assert!(cache.get("alice", "").is_none());

        // Two writes in flight, and another instance's commit (12) heard with the first's echo
        // (10): the first write to end applies both, though the second is still in flight.
        let (first, second) = (cache.writing("alice"), cache.writing("alice"));
        let sent = cache.generation("alice");
        cache.heard("alice", "", 10);
        cache.heard("alice", "", 12);
        assert!(cache.get("alice", "").is_none());
        write_ends(&cache, first, sent, 10);
        assert!(
            cache.get("alice", "").is_none(),
            "another instance's commit"
        );
        // The second write's echo (11), heard before it ends, waits for it.
        let sent = cache.generation("alice");
        cache.heard("alice", "", 11);
        write_ends(&cache, second, sent, 11);
        assert_eq!(cache.get("alice", "").unwrap().settings[0].value, 11);
    }

    #[test]
    fn a_write_keeps_what_it_left_unless_the_user_was_invalidated_since_it_was_sent() {
        let cache = SettingsCache::new(1 << 20).unwrap();
        let sent = cache.generation("alice");
        let read_during_the_write = cache.generation("alice");
        let after = AfterWrite {
            generation: sent,
            snapshot: list(1),
        };
        cache.written("alice", "", Some(&after));
        assert_eq!(cache.get("alice", "").unwrap().settings[0].value, 1);
        // A read that was in flight during the write does not replace it.
        cache.put("alice", "", read_during_the_write, list(0));
        assert_eq!(cache.get("alice", "").unwrap().settings[0].value, 1);
        // Another commit heard after the write was sent: what the write left may be old.
        let sent = cache.generation("alice");
        cache.heard("alice", "", 99);
        let after = AfterWrite {
            generation: sent,
            snapshot: list(2),
        };
        cache.written("alice", "", Some(&after));
        assert!(cache.get("alice", "").is_none());
        // Without what the write left, the settings are dropped.
        cache.put("alice", "", cache.generation("alice"), list(3));
        cache.written("alice", "", None);
        assert!(cache.get("alice", "").is_none());
    }

    #[test]
    fn clearing_drops_everything_and_refuses_reads_taken_before() {
        let cache = SettingsCache::new(1 << 20).unwrap();
        let before = cache.generation("bob");
        cache.put("alice", "", cache.generation("alice"), list(1));
        cache.clear();
        assert!(cache.get("alice", "").is_none());
        cache.put("bob", "", before, list(1));
        assert!(cache.get("bob", "").is_none());
        assert!(SettingsCache::new(0).is_none());
    }
}

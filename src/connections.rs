//! The open client connections, as the server loop and the WebSocket handler share them: a
//! cap on how many may be open, the idle ones given up first when a new one needs room, and
//! the signal that the service is stopping.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::sync::{Notify, watch};

pub struct Connections {
    max: usize,
    table: Mutex<Table>,
    /// Woken when a connection closes, for shutdown to wait on.
    closed: Notify,
    stopping: watch::Sender<bool>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
}

struct Entry {
    /// Requests in flight (or an upgraded WebSocket).
    busy: usize,
    /// Since when the connection has had nothing in flight.
    idle_since: Instant,
    /// Asked to close to make room; it no longer counts against the cap.
    evicted: bool,
    evict: Arc<Notify>,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Connections {
            max: max.max(1),
            table: Mutex::default(),
            closed: Notify::new(),
            stopping: watch::Sender::new(false),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a new connection. At the cap, the connection idle the longest is asked to
    /// close ([`Slot::evicted`]) to make room; when every connection is busy, `None`.
    pub fn open(self: &Arc<Self>) -> Option<Slot> {
        let mut table = self.lock();
        let counted = table.open.values().filter(|entry| !entry.evicted).count();
        if counted >= self.max {
            let oldest = table
                .open
                .values_mut()
                .filter(|entry| !entry.evicted && entry.busy == 0)
                .min_by_key(|entry| entry.idle_since)?;
            oldest.evicted = true;
            oldest.evict.notify_one();
            metrics::counter!("settings_api_connections_evicted_total").increment(1);
        }
        let id = table.next_id;
        table.next_id += 1;
        let evict = Arc::new(Notify::new());
        table.open.insert(
            id,
            Entry {
                busy: 0,
                idle_since: Instant::now(),
                evicted: false,
                evict: evict.clone(),
            },
        );
        metrics::gauge!("settings_api_connections_open").increment(1);
        Some(Slot {
            inner: Arc::new(SlotInner {
                id,
                connections: self.clone(),
                evict,
            }),
        })
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells every connection that the service is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Completes once [`Connections::stop`] was called.
    pub async fn stopping(&self) {
        let mut stopping = self.stopping.subscribe();
        // The sender lives as long as `self`, so this only ends with the signal.
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// Completes once every connection has closed.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.is_empty() {
                return;
            }
            closed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open connection's place; dropped when the connection (or the WebSocket it became)
/// closes. Cloned into each request, so that a WebSocket keeps it.
#[derive(Clone)]
pub struct Slot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    id: u64,
    connections: Arc<Connections>,
    evict: Arc<Notify>,
}

impl Slot {
    /// Marks the connection busy until the guard drops: busy connections are never evicted.
    pub fn busy(&self) -> Busy {
        if let Some(entry) = self.inner.connections.lock().open.get_mut(&self.inner.id) {
            entry.busy += 1;
        }
        Busy(self.clone())
    }

    /// Completes when the connection is asked to make room for a new one.
    pub async fn evicted(&self) {
        self.inner.evict.notified().await;
    }

    /// See [`Connections::stopping`].
    pub async fn stopping(&self) {
        self.inner.connections.stopping().await;
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.connections.lock().open.remove(&self.id);
        metrics::gauge!("settings_api_connections_open").decrement(1);
        self.connections.closed.notify_waiters();
    }
}

pub struct Busy(Slot);

impl Drop for Busy {
    fn drop(&mut self) {
        let slot = &self.0.inner;
        if let Some(entry) = slot.connections.lock().open.get_mut(&slot.id) {
            entry.busy = entry.busy.saturating_sub(1);
            entry.idle_since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let connections = Connections::new(2);
        let first = connections.open().unwrap();
        let second = connections.open().unwrap();
        let _busy = second.busy();
        // The third evicts the first (idle), not the second (busy).
        let _third = connections.open().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .expect("the idle connection is asked to close");
        assert_eq!(connections.len(), 3, "until it has closed");
        drop(first);
        assert_eq!(connections.len(), 2);
    }

    #[test]
    fn when_every_connection_is_busy_a_new_one_is_refused() {
        let connections = Connections::new(1);
        let only = connections.open().unwrap();
        let busy = only.busy();
        assert!(connections.open().is_none());
        drop(busy);
        assert!(connections.open().is_some());
    }

    #[tokio::test]
    async fn shutdown_waits_for_every_connection() {
        let connections = Connections::new(4);
        let slot = connections.open().unwrap();
        let copy = slot.clone();
        connections.stop();
        slot.stopping().await;
        drop(slot);
        assert!(!connections.is_empty(), "a clone keeps the slot");
        drop(copy);
        tokio::time::timeout(std::time::Duration::from_secs(1), connections.all_closed())
            .await
            .expect("all closed");
    }
}

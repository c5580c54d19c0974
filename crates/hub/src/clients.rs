//! Who is connected right now, and what each is doing. Each connection registers a
//! [`Session`]; transfers update its counters as bytes move (atomics, so the data path takes no
//! lock), and `troca who` reads them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use troca_proto::msg::{Activity, ClientEntry};

/// The connected clients.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    /// File bytes moved by every client since the hub started, when counted (`--metrics`: one
    /// counter shared by every connection is a cost only worth paying for them).
    totals: Option<Arc<Totals>>,
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
}

/// File bytes sent and received by all clients together, ever.
#[derive(Debug, Default)]
pub struct Totals {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// One connection as others see it.
#[derive(Debug)]
pub struct Session {
    pub address: SocketAddr,
    /// The address as text, made once for the history.
    pub address_text: Arc<str>,
    pub connected_ns: i64,
    name: Mutex<Arc<str>>,
    /// What it is doing: the activity, the file, and the transfer's total size.
    doing: Mutex<(Activity, String, u64)>,
    done: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    totals: Option<Arc<Totals>>,
}

/// Removes the session from the registry when the connection ends.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    pub session: Arc<Session>,
    clients: Arc<Clients>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
    }
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.sessions.lock().expect("client registry poisoned")
    }

    /// Registers a new connection.
    pub fn join(self: &Arc<Self>, address: SocketAddr, name: &str, now_ns: i64) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session {
            address,
            // A client a reverse proxy names has no port of its own to show.
            address_text: match address.port() {
                0 => address.ip().to_string().into(),
                _ => address.to_string().into(),
            },
            connected_ns: now_ns,
            name: Mutex::new(name.into()),
            doing: Mutex::new((Activity::Idle, String::new(), 0)),
            done: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            totals: self.totals.clone(),
        });
        self.lock().insert(id, Arc::clone(&session));
        Registration {
            id,
            session,
            clients: Arc::clone(self),
        }
    }

    /// Everyone connected, oldest first.
    pub fn list(&self) -> Vec<ClientEntry> {
        let mut all: Vec<(u64, ClientEntry)> =
            self.lock().iter().map(|(id, s)| (*id, s.entry())).collect();
        all.sort_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, e)| e).collect()
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// A registry that also counts every client's file bytes together.
    pub fn counting() -> Self {
        Self {
            totals: Some(Arc::default()),
            ..Self::default()
        }
    }

    /// File bytes (sent, received) by every client since the hub started (zero unless
    /// [`Clients::counting`]).
    pub fn totals(&self) -> (u64, u64) {
        self.totals.as_ref().map_or((0, 0), |t| {
            (
                t.sent.load(Ordering::Relaxed),
                t.received.load(Ordering::Relaxed),
            )
        })
    }

    /// Transfers in progress.
    pub fn transfers(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| s.doing.lock().expect("session poisoned").0 != Activity::Idle)
            .count()
    }
}

impl Session {
    pub fn name(&self) -> Arc<str> {
        Arc::clone(&self.name.lock().expect("session poisoned"))
    }

    pub fn rename(&self, name: &str) {
        *self.name.lock().expect("session poisoned") = name.into();
    }

    /// A history record of a request this client makes now.
    pub fn pending(&self, op: &'static str, target: String) -> crate::records::Pending {
        let name = self.name();
        let mut p = crate::records::Pending::new(name, Arc::clone(&self.address_text), op, target);
        // Web clients are named `web (AGENT)`; a WebDAV request says so itself.
        if p.client.starts_with("web") {
            p.face = "web";
        }
        p
    }

    /// A transfer of `total` bytes of `target` starts (`done` of them already in place).
    pub fn begin(&self, activity: Activity, target: &str, total: u64, done: u64) {
        *self.doing.lock().expect("session poisoned") = (activity, target.to_owned(), total);
        self.done.store(done, Ordering::Relaxed);
    }

    /// `n` more bytes sent to the client.
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        if let Some(t) = &self.totals {
            t.sent.fetch_add(n, Ordering::Relaxed);
        }
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` more bytes received from the client.
    pub fn received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        if let Some(t) = &self.totals {
            t.received.fetch_add(n, Ordering::Relaxed);
        }
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The transfer ended.
    pub fn idle(&self) {
        *self.doing.lock().expect("session poisoned") = (Activity::Idle, String::new(), 0);
        self.done.store(0, Ordering::Relaxed);
    }

    fn entry(&self) -> ClientEntry {
        let (activity, target, total) = self.doing.lock().expect("session poisoned").clone();
        ClientEntry {
            name: self.name().to_string(),
            address: self.address_text.to_string(),
            connected_ns: self.connected_ns,
            activity,
            target,
            done: self.done.load(Ordering::Relaxed),
            total,
            bytes_sent: self.sent.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
            hub: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_come_and_go_with_their_activity() {
        let clients = Arc::new(Clients::default());
        let a = clients.join("127.0.0.1:1".parse().unwrap(), "ana", 1);
        let b = clients.join("127.0.0.1:2".parse().unwrap(), "bo", 2);
        b.session.begin(Activity::Uploading, "x.bin", 100, 10);
        b.session.received(30);
        let list = clients.list();
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].name.as_str(), list[0].activity),
            ("ana", Activity::Idle)
        );
        assert_eq!(list[1].activity, Activity::Uploading);
        assert_eq!(
            (list[1].done, list[1].total, list[1].bytes_received),
            (40, 100, 30)
        );
        assert_eq!(clients.transfers(), 1);
        a.session.rename("ana2");
        drop(b);
        let list = clients.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "ana2");
    }
}

/// Marks the session busy with a transfer, and idle again however the transfer ends (it owns its
/// session, so it can live in a response body that outlives the request handler).
#[derive(Debug)]
pub struct Busy(Arc<Session>);

impl Busy {
    pub fn start(s: &Arc<Session>, activity: Activity, name: &str, total: u64, done: u64) -> Self {
        s.begin(activity, name, total, done);
        Busy(Arc::clone(s))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle();
    }
}

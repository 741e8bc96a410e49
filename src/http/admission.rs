//! Who gets a connection, and how many file descriptors clients may hold.
//!
//! Every client connection costs a descriptor, and a download holds a second one for its
//! file. Left unchecked, a flood of clients takes the last descriptor the recorder needs
//! to start its next ffmpeg, and recording stops while pages still load. So clients share
//! a budget: the process's descriptor limit minus [`RESERVED_FDS`] kept back for the
//! daemon's own work (the camera, ffmpeg children and their pipes, thumbnails, retention).
//! Within it, `[server] max_connections` caps connections and `max_connections_per_ip`
//! caps what one address may hold, so one client cannot take everyone's place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::gauge::Gauge;

use crate::config::ServerConfig;
use crate::sync::lock;

/// Descriptors no client may take: the daemon's own pipes, children, files and sockets
/// (about 25 at rest, a few dozen while a segment rotates), with room to spare.
pub const RESERVED_FDS: usize = 128;

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` (or the descriptor budget) is reached.
    Full,
    /// This address already holds `max_connections_per_ip`.
    PerAddress,
}

impl Refusal {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "max_connections",
            Refusal::PerAddress => "max_connections_per_ip",
        }
    }
}

/// The caps, and what is in use right now.
#[derive(Debug)]
pub struct Admission {
    /// Connections served at once.
    max_connections: usize,
    /// Connections one address may hold.
    max_per_address: usize,
    /// Descriptors clients may hold: connections plus the files they download.
    fd_budget: usize,
    used: Mutex<Used>,
    /// Open connections, as `/metrics` shows them.
    gauge: Gauge,
}

#[derive(Debug, Default)]
struct Used {
    connections: usize,
    fds: usize,
    per_address: HashMap<IpAddr, usize>,
    /// The most connections open at once since [`Admission::take_burst`] last looked.
    peak: usize,
}

/// A fall in open connections this large counts as the end of a burst.
const BURST: usize = 64;

impl Admission {
    /// Caps from the config, within what `fd_limit` (the process's descriptor limit) allows;
    /// `gauge` follows the number of open connections.
    pub fn new(config: &ServerConfig, fd_limit: u64, gauge: Gauge) -> Admission {
        let fd_budget = usize::try_from(fd_limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVED_FDS)
            .max(1);
        Admission {
            max_connections: config.max_connections.min(fd_budget),
            max_per_address: config.max_connections_per_ip,
            fd_budget,
            used: Mutex::default(),
            gauge,
        }
    }

    /// Connections served at once, after the descriptor limit had its say.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Connections one address may hold.
    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// Connections open right now.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Admits a connection from `peer`, or says why not. The connection counts until the
    /// permit (and every clone of its `Arc`) is dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Arc<ConnectionPermit>, Refusal> {
        let peer = canonical(peer);
        let mut used = self.lock();
        if used.connections >= self.max_connections || used.fds >= self.fd_budget {
            return Err(Refusal::Full);
        }
        let mine = used.per_address.entry(peer).or_insert(0);
        if *mine >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *mine += 1;
        used.connections += 1;
        used.fds += 1;
        used.peak = used.peak.max(used.connections);
        self.gauge.set(used.connections as i64);
        Ok(Arc::new(ConnectionPermit {
            admission: self.clone(),
            peer,
        }))
    }

    /// A descriptor for a file a client downloads; `None` when clients hold their whole
    /// budget (the download is refused rather than taking the daemon's reserve).
    pub fn file(self: &Arc<Self>) -> Option<FilePermit> {
        let mut used = self.lock();
        if used.fds >= self.fd_budget {
            return None;
        }
        used.fds += 1;
        Some(FilePermit {
            admission: self.clone(),
        })
    }

    /// Whether a burst of connections has ended since the last call (at least [`BURST`]
    /// fewer are open than at the peak), with that peak.
    pub fn take_burst(&self) -> Option<usize> {
        let mut used = self.lock();
        let peak = used.peak;
        used.peak = used.connections;
        (peak >= used.connections + BURST).then_some(peak)
    }

    fn lock(&self) -> MutexGuard<'_, Used> {
        lock(&self.used)
    }
}

/// One admitted connection. Shared (in an `Arc`) between the HTTP connection and the
/// WebSocket it may become.
#[derive(Debug)]
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    peer: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut used = self.admission.lock();
        used.connections -= 1;
        used.fds -= 1;
        self.admission.gauge.set(used.connections as i64);
        if let Some(count) = used.per_address.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                used.per_address.remove(&self.peer);
            }
        }
    }
}

/// One descriptor held by a download's open file.
#[derive(Debug)]
pub struct FilePermit {
    admission: Arc<Admission>,
}

impl Drop for FilePermit {
    fn drop(&mut self) {
        self.admission.lock().fds -= 1;
    }
}

/// An IPv4 client reaching a dual-stack socket shows up as `::ffff:a.b.c.d`; it is the
/// same client as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Raises the soft limit on open descriptors to the hard limit (as Go's runtime and most
/// servers do; systemd's default soft limit of 1024 is kept low only for old `select()`
/// users), and returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|soft| soft < hard)
    {
        limit.current = Some(hard);
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    // No limit at all: any number is within it.
    limit.current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_ip: usize, fd_limit: u64) -> Arc<Admission> {
        let config = ServerConfig {
            max_connections: max,
            max_connections_per_ip: per_ip,
            ..ServerConfig::default()
        };
        Arc::new(Admission::new(&config, fd_limit, Gauge::default()))
    }

    #[test]
    fn caps_per_address_and_in_total_and_frees_on_drop() {
        let a = admission(3, 2, 10_000);
        let one: IpAddr = "10.0.0.1".parse().expect("ip");
        let two: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = a.admit(one).expect("first");
        let _second = a.admit(one).expect("second");
        assert_eq!(a.admit(one).err(), Some(Refusal::PerAddress));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(a.admit(mapped).err(), Some(Refusal::PerAddress), "same client");
        let _third = a.admit(two).expect("another address");
        assert_eq!(a.admit(two).err(), Some(Refusal::Full));
        drop(first);
        assert_eq!(a.connections(), 2);
        assert!(a.admit(two).is_ok(), "a freed place is taken again");
    }

    #[test]
    fn the_descriptor_limit_lowers_the_cap_and_files_share_the_budget() {
        let a = admission(1024, 1024, RESERVED_FDS as u64 + 3);
        assert_eq!(a.max_connections(), 3);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let _c1 = a.admit(ip).expect("c1");
        let f1 = a.file().expect("a file");
        let _c2 = a.admit(ip).expect("c2");
        assert!(a.file().is_none(), "the budget is spent");
        assert_eq!(a.admit(ip).err(), Some(Refusal::Full));
        drop(f1);
        assert!(a.file().is_some());
    }

    #[test]
    fn a_burst_is_seen_once_when_it_is_over() {
        let a = admission(1000, 1000, 10_000);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let burst: Vec<_> = (0..100).map(|_| a.admit(ip).expect("admit")).collect();
        assert_eq!(a.take_burst(), None, "still open");
        drop(burst);
        assert_eq!(a.take_burst(), Some(100));
        assert_eq!(a.take_burst(), None, "reported once");
    }
}

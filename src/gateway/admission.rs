//! Who gets a connection thread: the global cap (`--max-connections`), the cap per peer address
//! (`--max-connections-per-ip`), and room made by closing idle connections, so that sockets
//! that send nothing cannot hold either cap.
//!
//! A connection is idle while it waits for a request: from its accept, or the end of its last
//! response, until its next request's head is complete. Idle connections are listed with a
//! duplicate of their socket; when a cap is reached, the one idle the longest (at least
//! `EVICTION_GRACE`, so a connection whose request is on its way is left alone) is shut down,
//! which wakes its thread with an end of stream, and its place goes to the newcomer at once.
//! Threads so closed end within milliseconds, so the caps hold up to those leaving. An IPv6 peer
//! counts by its /64 (`credential::client_address`): one subscriber's network is one peer.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::gateway::credential::client_address;
use crate::thread::lock;

/// How long a connection must have been idle before it may be closed to make room: a client
/// sends its request right after connecting, and that request must not be cut off.
pub(crate) const EVICTION_GRACE: Duration = Duration::from_secs(2);

/// Connections from one peer address unless `--max-connections-per-ip` says otherwise.
pub(crate) const DEFAULT_PER_IP: usize = 64;

/// The connection caps and the idle connections that may be closed to honour them.
pub(crate) struct Admission {
    max_total: usize,
    max_per_ip: usize,
    /// Whether loopback peers are held to `max_per_ip` too (only when it was set explicitly:
    /// every local client, and a reverse proxy on the same host, share one loopback address).
    cap_loopback: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections counted against the caps (closed idle ones no longer are).
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    idle: HashMap<u64, Idle>,
    /// Tickets whose places were given to others when their idle connection was closed.
    evicted: HashSet<u64>,
    next_id: u64,
}

struct Idle {
    ip: IpAddr,
    since: Instant,
    socket: TcpStream,
}

impl Admission {
    /// `max_per_ip: None` is the default cap, `DEFAULT_PER_IP`, which loopback peers are exempt
    /// from; an explicit cap holds for every address.
    pub(crate) fn new(max_total: usize, max_per_ip: Option<usize>) -> Arc<Admission> {
        Arc::new(Admission {
            max_total,
            max_per_ip: max_per_ip.unwrap_or(DEFAULT_PER_IP),
            cap_loopback: max_per_ip.is_some(),
            state: Mutex::new(State::default()),
        })
    }

    /// A place for a new connection from `ip`, closing an idle one when a cap is reached; the
    /// reason (for a 503) when nothing can make room.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, String> {
        let ip = client_address(ip);
        let mut st = lock(&self.state);
        let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
        let capped = self.cap_loopback || !ip.is_loopback();
        if capped && from_ip >= self.max_per_ip && !st.evict_oldest(Some(ip)) {
            return Err(format!(
                "{from_ip} connections are open from {ip} (--max-connections-per-ip); close some or try again later"
            ));
        }
        if st.total >= self.max_total && !st.evict_oldest(None) {
            return Err(format!(
                "the gateway has {} connections open (--max-connections); try again later",
                st.total
            ));
        }
        st.total += 1;
        *st.per_ip.entry(ip).or_default() += 1;
        st.next_id += 1;
        Ok(Ticket { admission: self.clone(), id: st.next_id, ip })
    }

    /// Connections counted against the caps right now.
    pub(crate) fn open(&self) -> usize {
        lock(&self.state).total
    }
}

impl State {
    /// Shuts down the connection idle the longest (past the grace; from `ip` when given) and
    /// gives its place back. False when there is none.
    fn evict_oldest(&mut self, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let victim = self
            .idle
            .iter()
            .filter(|(_, i)| ip.is_none_or(|ip| i.ip == ip) && now.duration_since(i.since) >= EVICTION_GRACE)
            .min_by_key(|(_, i)| i.since)
            .map(|(id, _)| *id);
        let Some(idle) = victim.and_then(|id| self.idle.remove(&id).map(|idle| (id, idle))) else {
            return false;
        };
        let (id, idle) = idle;
        let _ = idle.socket.shutdown(Shutdown::Both);
        log::debug!("closed a connection from {} idle for {:?} to make room", idle.ip, now - idle.since);
        self.evicted.insert(id);
        self.release(idle.ip);
        true
    }

    fn release(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// One admitted connection's place under the caps, given back when dropped.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    ip: IpAddr,
}

impl Ticket {
    /// Lists the connection as idle (waiting for a request) until the guard ends. While listed,
    /// it may be shut down to make room for another.
    pub(crate) fn idle(&self, socket: &TcpStream) -> IdleGuard<'_> {
        if let Ok(socket) = socket.try_clone() {
            let idle = Idle { ip: self.ip, since: Instant::now(), socket };
            lock(&self.admission.state).idle.insert(self.id, idle);
        }
        IdleGuard { ticket: self }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = lock(&self.admission.state);
        st.idle.remove(&self.id);
        if !st.evicted.remove(&self.id) {
            st.release(self.ip);
        }
    }
}

/// While alive, the connection is listed as idle.
pub(crate) struct IdleGuard<'a> {
    ticket: &'a Ticket,
}

impl IdleGuard<'_> {
    /// Ends the idle wait; false when the connection was closed meanwhile to make room (its
    /// thread must end, whatever it read).
    pub(crate) fn end(self) -> bool {
        let st = lock(&self.ticket.admission.state);
        !st.evicted.contains(&self.ticket.id)
    }
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        lock(&self.ticket.admission.state).idle.remove(&self.ticket.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn caps_hold_and_places_come_back() {
        let adm = Admission::new(3, Some(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = adm.admit(a).unwrap();
        let _t2 = adm.admit(a).unwrap();
        assert!(adm.admit(a).err().unwrap().contains("--max-connections-per-ip"));
        let _t3 = adm.admit(b).unwrap();
        assert!(adm.admit(b).err().unwrap().contains("--max-connections"));
        drop(t1);
        assert_eq!(adm.open(), 2);
        let _t4 = adm.admit(b).unwrap();
        assert_eq!(adm.open(), 3);

        let local = Admission::new(1000, None);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<Ticket> = (0..DEFAULT_PER_IP + 1).map(|_| local.admit(lo).unwrap()).collect();
        assert_eq!(held.len(), DEFAULT_PER_IP + 1, "the default cap spares loopback");
        let far: Vec<Ticket> = (0..DEFAULT_PER_IP).map(|_| local.admit(a).unwrap()).collect();
        assert!(local.admit(a).is_err() && far.len() == DEFAULT_PER_IP, "and holds for others");
    }

    #[test]
    fn one_ipv6_64_is_one_peer() {
        let adm = Admission::new(100, Some(2));
        let within = |host: u16| -> IpAddr { format!("2001:db8:5:6::{host:x}").parse().unwrap() };
        let _a = adm.admit(within(1)).unwrap();
        let _b = adm.admit(within(2)).unwrap();
        let err = adm.admit(within(3)).err().expect("a third address of the same /64 is refused");
        assert!(err.contains("2001:db8:5:6::"), "{err}");
        let other: IpAddr = "2001:db8:5:7::1".parse().unwrap();
        assert!(adm.admit(other).is_ok(), "another /64 is another peer");
    }

    #[test]
    fn an_idle_connection_past_the_grace_makes_room() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (_client, server) = pair(&listener);
        let adm = Admission::new(1, Some(1));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let holder = adm.admit(ip).unwrap();
        let guard = holder.idle(&server);
        assert!(adm.admit(ip).is_err(), "not within the grace");
        lock(&adm.state).idle.get_mut(&holder.id).unwrap().since -= EVICTION_GRACE;
        let newcomer = adm.admit(ip).unwrap();
        assert!(!guard.end(), "the holder learns it was closed");
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &server, &mut buf).unwrap(), 0, "woken with an end of stream");
        drop(holder);
        assert_eq!(adm.open(), 1, "the evicted ticket gives nothing back twice");
        drop(newcomer);
        assert_eq!(adm.open(), 0);
        assert!(lock(&adm.state).evicted.is_empty() && lock(&adm.state).per_ip.is_empty());
    }
}

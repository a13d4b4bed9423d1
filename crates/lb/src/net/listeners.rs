//! The client-facing listening sockets: bound at start, then added, removed, or switched between plain
//! and TLS by a reload.
//!
//! # One socket per worker and address
//!
//! Every worker has its own socket on every address (`SO_REUSEPORT`, see [`crate::server`]), so one
//! address in `server.listen` is N sockets, one per worker, each with its own accept loop. A worker
//! receives its sockets through a channel ([`NewListener`]), at start and after each reload alike.
//!
//! # What a reload does to them
//!
//! A reload compares the addresses in the new file with those in use ([`Listeners::plan`]):
//!
//! - **A new address** is bound on every worker *before anything else changes*, so an address already
//!   in use refuses the whole reload: nothing has been swapped yet, and the sockets bound so far are
//!   closed again when the plan is dropped. Once the reload is sure, each worker gets its socket and
//!   starts an accept loop on it ([`Listeners::commit`]). The kernel queues connections on a socket from
//!   the moment it listens, so a client that connects right after the reload answered is accepted as
//!   soon as its worker picks the socket up; it is not refused.
//! - **A removed address** is told to close: every worker's accept loop for it returns and drops its
//!   socket, so new connects are refused, and the reload waits (up to [`CLOSE_WAIT`]) until that has
//!   happened on every worker. Connections accepted earlier are left alone: they go on until the client
//!   closes them, their idle timeout does, or the proxy shuts down.
//! - **An address that stays** keeps its sockets: no connection is lost and the port is never briefly
//!   closed. One that moves between `listen` and `listen_tls` keeps them too and only switches mode
//!   (binding it again would fail, as its old sockets are still open). A `127.0.0.1:0` that stays is the
//!   same socket, on the port it got at start.
//!
//! nginx does the same on `nginx -s reload`: the master process opens the new listening sockets (a bind
//! error fails the reload and the old workers carry on), the new workers inherit them, and sockets no
//! longer in the file are closed. Envoy adds listeners and drains removed ones through LDS.

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::net::handoff::{Handed, Kind};
use tokio::sync::{mpsc, watch};

/// An address could not be bound (in use, or not ours).
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub error: std::io::Error,
}

/// How long a reload waits for every worker to close a removed address before it reports anyway.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What an address's accept loops do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accept and serve plain HTTP (HTTP/1.1, or h2c with prior knowledge).
    Plain,
    /// Accept, complete a TLS handshake, then serve HTTP/1.1 or HTTP/2 as ALPN chose.
    Tls,
    /// Stop accepting and close the socket.
    Closed,
}

/// One worker's socket on one address, with the link that switches or closes it.
#[derive(Debug)]
pub struct NewListener {
    /// Bound and listening.
    pub socket: std::net::TcpListener,
    /// What the accept loop should do, as it changes.
    pub control: Control,
}

/// An accept loop's link to the reloads: its mode, and a token whose drop tells a reload waiting for
/// this address to close that this worker's socket is gone.
#[derive(Debug)]
pub struct Control {
    mode: watch::Receiver<Mode>,
    _open: std_mpsc::Sender<()>,
}

impl Control {
    /// The mode now.
    pub fn mode(&mut self) -> Mode {
        *self.mode.borrow_and_update()
    }

    /// Has a reload changed the mode since it was last read? One atomic load.
    pub fn has_changed(&self) -> bool {
        self.mode.has_changed().unwrap_or(false)
    }

    /// Resolves with the new mode when a reload changes it. The accept loop waits on this next to
    /// `accept`, so it reads the mode once per change, not once per connection.
    pub async fn changed(&mut self) -> Mode {
        if self.mode.changed().await.is_err() {
            // The reloader is gone, so the proxy is stopping: no change will come, and the shutdown
            // signal ends the accept loop.
            std::future::pending::<()>().await;
        }
        *self.mode.borrow_and_update()
    }
}

/// An address in use.
#[derive(Debug)]
struct Active {
    /// As written in the file (port 0 stays 0 here).
    requested: SocketAddr,
    /// As bound (port 0 became a real port).
    bound: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Never receives: it reports `Disconnected` once every worker's accept loop on the address has
    /// ended and dropped its [`Control`].
    open: std_mpsc::Receiver<()>,
    /// A second descriptor of each worker's socket, to hand to a new process on an upgrade
    /// ([`Listeners::handoff`]). Dropped with the address when a reload removes it.
    copies: Vec<std::net::TcpListener>,
}

/// Every address the proxy listens on, and the channel to each worker.
#[derive(Debug)]
pub struct Listeners {
    workers: Vec<mpsc::UnboundedSender<NewListener>>,
    active: Vec<Active>,
    /// Sockets a previous process handed over (a binary upgrade), taken by the first plan that wants
    /// their address instead of binding it.
    inherited: std::sync::Mutex<Vec<Handed>>,
}

/// A change worked out and bound but not yet in force; dropping it closes the sockets it bound.
#[derive(Debug, Default)]
pub struct Plan {
    /// Every address of the new file, in file order (plain, then TLS).
    wanted: Vec<Wanted>,
    /// Indexes into `active` of addresses not in the new file.
    close: Vec<usize>,
}

/// One address of the new file.
#[derive(Debug)]
enum Wanted {
    /// In use already (index into `active`), in this mode from now on.
    Keep(usize, Mode),
    /// New, and bound.
    Bind(Bound),
}

/// A new address, bound on every worker.
#[derive(Debug)]
struct Bound {
    requested: SocketAddr,
    bound: SocketAddr,
    mode: Mode,
    sockets: Vec<std::net::TcpListener>,
}

/// What [`Listeners::commit`] changed, as URLs (`http://127.0.0.1:8080`, `https://...`): an address
/// switched from plain to TLS is removed as `http://` and added as `https://`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenChanges {
    /// Accepting from now on.
    pub added: Vec<String>,
    /// No longer accepting.
    pub removed: Vec<String>,
}

fn url(mode: Mode, addr: SocketAddr) -> String {
    match mode {
        Mode::Tls => format!("https://{addr}"),
        _ => format!("http://{addr}"),
    }
}

impl Listeners {
    /// No address yet, for `workers` workers; each worker reads its sockets from its receiver.
    pub fn new(workers: usize) -> (Listeners, Vec<mpsc::UnboundedReceiver<NewListener>>) {
        let (senders, receivers) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let inherited = std::sync::Mutex::new(Vec::new());
        (Listeners { workers: senders, active: Vec::new(), inherited }, receivers)
    }

    /// Use these sockets, handed over by the process this one replaces, for their addresses instead of
    /// binding them (see [`crate::net::handoff`]).
    pub fn adopt(&mut self, handed: Vec<Handed>) {
        self.inherited = std::sync::Mutex::new(handed);
    }

    /// A copy of every listening socket, for the process that replaces this one.
    pub fn handoff(&self) -> std::io::Result<Vec<Handed>> {
        let mut handed = Vec::with_capacity(self.active.len());
        for a in &self.active {
            let kind = if *a.mode.borrow() == Mode::Tls { Kind::Tls } else { Kind::Plain };
            let sockets = a.copies.iter().map(std::net::TcpListener::try_clone).collect::<Result<_, _>>()?;
            handed.push(Handed { kind, requested: a.requested, bound: a.bound, sockets });
        }
        Ok(handed)
    }

    /// Close the copies kept for an upgrade: on shutdown, so that once the workers close their
    /// sockets the ports refuse new connections rather than queue them for nobody.
    pub fn release_copies(&mut self) {
        for a in &mut self.active {
            a.copies.clear();
        }
    }

    /// The sockets for `requested`: handed over by the previous process if it had them (as many as it
    /// had workers: [`Listeners::commit`] spreads them over ours), else bound once per worker.
    fn bind_or_adopt(
        &self,
        requested: SocketAddr,
    ) -> Result<(SocketAddr, Vec<std::net::TcpListener>), BindError> {
        let mut inherited = self.inherited.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let hit = inherited.iter().position(|h| h.bound == requested || h.requested == requested);
        match hit {
            Some(i) if !inherited[i].sockets.is_empty() => {
                let h = inherited.swap_remove(i);
                Ok((h.bound, h.sockets))
            }
            _ => bind_everywhere(requested, self.workers.len()),
        }
    }

    /// The addresses in use, as bound: plain ones, then TLS ones, each in file order.
    pub fn addresses(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let of = |m: Mode| self.active.iter().filter(|a| *a.mode.borrow() == m).map(|a| a.bound).collect();
        (of(Mode::Plain), of(Mode::Tls))
    }

    /// Work out what `listen` and `listen_tls` change, binding every new address on every worker now.
    /// Nothing in force changes: on error the sockets bound so far are closed, and so they are if the
    /// plan is dropped.
    pub fn plan(&self, listen: &[SocketAddr], listen_tls: &[SocketAddr]) -> Result<Plan, BindError> {
        let mut plan = Plan::default();
        let mut stays = vec![false; self.active.len()];
        let wanted: Vec<(SocketAddr, Mode)> = listen
            .iter()
            .map(|a| (*a, Mode::Plain))
            .chain(listen_tls.iter().map(|a| (*a, Mode::Tls)))
            .collect();
        // Which address in use each wanted one is, if any: first by the address as bound (a file may
        // name the port a `:0` was given), then as written (the same `:0` as before is the same socket).
        // Two passes, so that a `:0` cannot take the socket another line names by its port.
        let mut same: Vec<Option<usize>> = vec![None; wanted.len()];
        for by_bound in [true, false] {
            for (w, (requested, _)) in wanted.iter().enumerate() {
                if same[w].is_some() {
                    continue;
                }
                let hit = self.active.iter().enumerate().position(|(i, a)| {
                    !stays[i] && if by_bound { a.bound == *requested } else { a.requested == *requested }
                });
                if let Some(i) = hit {
                    stays[i] = true;
                    same[w] = Some(i);
                }
            }
        }
        for ((requested, mode), same) in wanted.into_iter().zip(same) {
            plan.wanted.push(match same {
                Some(i) => Wanted::Keep(i, mode),
                None => {
                    let (bound, sockets) = self.bind_or_adopt(requested)?;
                    Wanted::Bind(Bound { requested, bound, mode, sockets })
                }
            });
        }
        plan.close = (0..self.active.len()).filter(|&i| !stays[i]).collect();
        Ok(plan)
    }

    /// Put `plan` in force: switch the modes of addresses that stay, close removed addresses, and hand
    /// the new sockets to the workers. Waits (up to [`CLOSE_WAIT`]) until every worker has closed the
    /// removed addresses, so that when a reload answers, their ports refuse new connections.
    pub fn commit(&mut self, plan: Plan) -> ListenChanges {
        let mut changes = ListenChanges::default();
        let mut old: Vec<Option<Active>> = std::mem::take(&mut self.active).into_iter().map(Some).collect();
        let mut closing = Vec::new();
        for i in plan.close {
            if let Some(a) = old.get_mut(i).and_then(Option::take) {
                changes.removed.push(url(a.mode.send_replace(Mode::Closed), a.bound));
                closing.push(a);
            }
        }
        // The new list in file order, so that `addresses` lists them as the file does.
        for wanted in plan.wanted {
            match wanted {
                Wanted::Keep(i, mode) => {
                    let Some(a) = old.get_mut(i).and_then(Option::take) else { continue };
                    let was = a.mode.send_replace(mode);
                    if was != mode {
                        changes.removed.push(url(was, a.bound));
                        changes.added.push(url(mode, a.bound));
                    }
                    self.active.push(a);
                }
                Wanted::Bind(b) => {
                    let (mode, _) = watch::channel(b.mode);
                    let (open, open_rx) = std_mpsc::channel();
                    let copies = b.sockets.iter().filter_map(|s| s.try_clone().ok()).collect();
                    for (worker, socket) in self.spread(b.sockets) {
                        let control = Control { mode: mode.subscribe(), _open: open.clone() };
                        // A worker that has exited (the proxy is stopping) drops the socket with the
                        // message.
                        let _ = worker.send(NewListener { socket, control });
                    }
                    changes.added.push(url(b.mode, b.bound));
                    let (requested, bound) = (b.requested, b.bound);
                    self.active.push(Active { requested, bound, mode, open: open_rx, copies });
                }
            }
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        for a in closing {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(std_mpsc::RecvTimeoutError::Timeout) = a.open.recv_timeout(left) {
                tracing::warn!("{} is still accepting on some worker after {CLOSE_WAIT:?}", a.bound);
            }
        }
        changes
    }
}

impl Listeners {
    /// Pair sockets with workers: one each when there are as many (as bound here); sockets handed over
    /// by a process with more workers go round-robin (a worker then accepts on several), and with
    /// fewer, workers share a socket's accept queue through a second descriptor of it.
    fn spread(
        &self,
        sockets: Vec<std::net::TcpListener>,
    ) -> Vec<(&mpsc::UnboundedSender<NewListener>, std::net::TcpListener)> {
        let n = sockets.len();
        let mut pairs = Vec::with_capacity(n.max(self.workers.len()));
        let extra: Vec<std::net::TcpListener> = (n..self.workers.len())
            .filter_map(|w| sockets.get(w % n.max(1)).and_then(|s| s.try_clone().ok()))
            .collect();
        for (i, socket) in sockets.into_iter().chain(extra).enumerate() {
            pairs.push((&self.workers[i % self.workers.len()], socket));
        }
        pairs
    }
}

/// Bind `requested` once per worker. For port 0, the first socket picks the port and the others join it.
fn bind_everywhere(
    requested: SocketAddr,
    workers: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), BindError> {
    if workers > 1 && requested.port() != 0 {
        // With SO_REUSEPORT on every socket, the kernel would let us share a port that another
        // process (another lb, say) already listens on, and split its clients with it. A probe
        // bound *without* SO_REUSEPORT fails on a taken port, which is the error we want.
        probe(requested).map_err(|error| BindError { addr: requested, error })?;
    }
    let mut addr = requested;
    let mut sockets = Vec::with_capacity(workers);
    for w in 0..workers {
        let l = bind(addr, workers > 1).map_err(|error| BindError { addr, error })?;
        if w == 0 {
            addr = l.local_addr().map_err(|error| BindError { addr, error })?;
        }
        sockets.push(l);
    }
    Ok((addr, sockets))
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR: restart at once even with connections of the previous run in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Bind (without listening, so no client can land on it) and close: does the port look free?
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Take what the workers were sent, as (worker, bound address, mode).
    fn received(rx: &mut [mpsc::UnboundedReceiver<NewListener>]) -> Vec<(usize, SocketAddr, Mode)> {
        let mut out = Vec::new();
        for (w, rx) in rx.iter_mut().enumerate() {
            while let Ok(mut n) = rx.try_recv() {
                let bound = n.socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
                out.push((w, bound, n.control.mode()));
            }
        }
        out
    }

    #[test]
    fn a_reload_binds_new_addresses_keeps_old_ones_and_switches_modes() {
        let (mut l, mut rx) = Listeners::new(2);
        let plan = l.plan(&[addr("127.0.0.1:0"), addr("127.0.0.1:0")], &[]).unwrap_or_else(|e| panic!("{e}"));
        let start = l.commit(plan);
        assert_eq!(start.added.len(), 2);
        let (plain, tls) = l.addresses();
        assert_eq!((plain.len(), tls.len()), (2, 0));
        assert_ne!(plain[0].port(), plain[1].port(), "two port-0 entries are two ports");
        // Each worker got its own socket on each address.
        let sent = received(&mut rx);
        assert_eq!(sent.len(), 4);
        for w in 0..2 {
            for a in &plain {
                assert!(sent.contains(&(w, *a, Mode::Plain)), "worker {w} has no socket on {a}");
            }
        }

        // Keep the first (named by its real port now), move the second to TLS, add a third. The moved
        // one is not bound again: its sockets stay open, which is why a bind would fail.
        let plan = l.plan(&[plain[0], addr("127.0.0.1:0")], &[plain[1]]).unwrap_or_else(|e| panic!("{e}"));
        let changes = l.commit(plan);
        let (now_plain, now_tls) = l.addresses();
        assert_eq!(now_plain[0], plain[0]);
        assert_eq!(now_tls, vec![plain[1]]);
        assert_eq!(changes.removed, vec![format!("http://{}", plain[1])]);
        assert_eq!(changes.added, vec![format!("http://{}", now_plain[1]), format!("https://{}", plain[1])]);
        assert_eq!(received(&mut rx).len(), 2, "only the new address was sent, once per worker");
    }

    #[test]
    fn an_address_in_use_fails_the_plan_and_changes_nothing() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let taken = taken.local_addr().map(|a| (a, taken)).unwrap_or_else(|e| panic!("{e}"));
        let (mut l, _rx) = Listeners::new(1);
        let plan = l.plan(&[addr("127.0.0.1:0")], &[]).unwrap_or_else(|e| panic!("{e}"));
        l.commit(plan);
        let before = l.addresses();
        let Err(err) = l.plan(&[before.0[0], taken.0], &[]) else { panic!("a taken port was bound") };
        assert!(matches!(err, BindError { addr, .. } if addr == taken.0), "{err}");
        assert_eq!(l.addresses(), before);
    }
}

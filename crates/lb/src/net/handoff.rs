//! Handing listening sockets from a running `lb` to its successor, for a binary upgrade (`SIGUSR2`).
//!
//! # Why pass sockets at all
//!
//! A new process could bind the same ports itself (with `SO_REUSEPORT`), but then the old process
//! must close its own sockets, and closing a listening socket resets every connection waiting in its
//! accept queue: under load, some clients see a reset on every upgrade. Passed sockets are the same
//! kernel objects, queue included: the new process accepts from them, the old one stops accepting and
//! drops its copies, and nothing waiting is lost. HAProxy (`-x`, the master's socket) and Pingora pass
//! sockets over a Unix socket this way; nginx has its new binary inherit them across `exec`.
//!
//! # The exchange
//!
//! The old process listens on a Unix socket and starts the new one with its path in
//! [`SOCKET_ENV`]. The new process connects and reads one message: a text description, then, as
//! `SCM_RIGHTS` ancillary data on the same message, every socket in the order the description lists
//! them:
//!
//! ```text
//! lb-handoff 1
//! plain 127.0.0.1:8080 127.0.0.1:8080 2     kind, address as configured, as bound, sockets
//! tls 127.0.0.1:8443 127.0.0.1:8443 2
//! admin 127.0.0.1:9900 127.0.0.1:9900 1
//! end
//! ```
//!
//! When its workers are accepting, the new process writes `ready\n` back, and the old one shuts down
//! gracefully (see `server/upgrade.rs`). Receiving file descriptors this way needs no `unsafe`: the
//! kernel hands them over as new descriptors, which `rustix` returns as `OwnedFd`s.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, recvmsg, sendmsg,
};

/// The environment variable that tells a new process where to collect its sockets.
pub const SOCKET_ENV: &str = "LB_UPGRADE_SOCKET";

/// The most sockets one handoff carries (Linux takes at most 253 descriptors in one message).
pub const MAX_SOCKETS: usize = 250;

/// The largest description accepted.
const MAX_DESCRIPTION: usize = 64 * 1024;

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `server.listen` address.
    Plain,
    /// A `server.listen_tls` address.
    Tls,
    /// The admin API's address.
    Admin,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Tls => "tls",
            Kind::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "plain" => Some(Kind::Plain),
            "tls" => Some(Kind::Tls),
            "admin" => Some(Kind::Admin),
            _ => None,
        }
    }
}

/// One address's listening sockets (one per worker of the process that bound them).
#[derive(Debug)]
pub struct Handed {
    /// What they are for.
    pub kind: Kind,
    /// The address as the configuration names it (`127.0.0.1:0` stays `:0` here).
    pub requested: SocketAddr,
    /// The address they are bound to.
    pub bound: SocketAddr,
    /// The sockets, listening.
    pub sockets: Vec<TcpListener>,
}

/// Send `handed` over `stream`: the description and every socket, in one message.
pub fn send(stream: &UnixStream, handed: &[Handed]) -> io::Result<()> {
    let mut text = String::from("lb-handoff 1\n");
    for h in handed {
        text.push_str(&format!("{} {} {} {}\n", h.kind.name(), h.requested, h.bound, h.sockets.len()));
    }
    text.push_str("end\n");
    let fds: Vec<BorrowedFd<'_>> = handed.iter().flat_map(|h| h.sockets.iter().map(AsFd::as_fd)).collect();
    if fds.len() > MAX_SOCKETS {
        return Err(io::Error::other(format!("{} sockets to hand over, at most {MAX_SOCKETS}", fds.len())));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("the sockets do not fit one message"));
    }
    let bytes = text.as_bytes();
    let n = sendmsg(stream, &[IoSlice::new(bytes)], &mut control, SendFlags::empty())?;
    // The descriptors went with the first byte; the rest of the text, if any, follows plainly.
    (&*stream).write_all(&bytes[n..])
}

/// Receive what [`send`] sent.
pub fn receive(stream: &UnixStream) -> io::Result<Vec<Handed>> {
    let mut text = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; MAX_DESCRIPTION];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    while !text.ends_with(b"end\n") {
        if text.len() >= MAX_DESCRIPTION {
            return Err(io::Error::other("handoff description too long"));
        }
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(stream, &mut [IoSliceMut::new(&mut buf)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if got.bytes == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        text.extend_from_slice(&buf[..got.bytes]);
    }
    let text = String::from_utf8(text).map_err(|_| io::Error::other("handoff description is not UTF-8"))?;
    parse(&text, fds)
}

/// Pair the description's lines with the descriptors, in order.
fn parse(text: &str, fds: Vec<OwnedFd>) -> io::Result<Vec<Handed>> {
    let bad = |line: &str| io::Error::other(format!("bad handoff line {line:?}"));
    let mut lines = text.lines();
    if lines.next() != Some("lb-handoff 1") {
        return Err(io::Error::other("not an lb handoff (or another version)"));
    }
    let mut fds = fds.into_iter();
    let mut handed = Vec::new();
    for line in lines.take_while(|l| *l != "end") {
        let fields: Vec<&str> = line.split(' ').collect();
        let [kind, requested, bound, count] = fields[..] else { return Err(bad(line)) };
        let kind = Kind::parse(kind).ok_or_else(|| bad(line))?;
        let requested = requested.parse().map_err(|_| bad(line))?;
        let bound = bound.parse().map_err(|_| bad(line))?;
        let count: usize = count.parse().map_err(|_| bad(line))?;
        let mut sockets = Vec::with_capacity(count);
        for _ in 0..count {
            let fd = fds.next().ok_or_else(|| io::Error::other("fewer sockets than described"))?;
            let socket = TcpListener::from(fd);
            socket.set_nonblocking(true)?;
            sockets.push(socket);
        }
        handed.push(Handed { kind, requested, bound, sockets });
    }
    Ok(handed)
}

/// The new process: say it accepts now.
pub fn ready(mut stream: &UnixStream) -> io::Result<()> {
    stream.write_all(b"ready\n")
}

/// The old process: wait for [`ready`]. An error (the new process exited, or said something else)
/// means the upgrade failed and the old process keeps serving.
pub fn wait_ready(mut stream: &UnixStream) -> io::Result<()> {
    let mut got = [0u8; 6];
    stream.read_exact(&mut got)?;
    if &got == b"ready\n" { Ok(()) } else { Err(io::Error::other("the new process did not say ready")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two addresses' sockets cross a socket pair and still accept connections made to the originals.
    #[test]
    fn sockets_cross_and_keep_accepting() {
        let bind = || TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (bind(), bind());
        let (addr_a, addr_b) = (
            a.local_addr().unwrap_or_else(|e| panic!("{e}")),
            b.local_addr().unwrap_or_else(|e| panic!("{e}")),
        );
        let handed = vec![
            Handed {
                kind: Kind::Plain,
                requested: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
                bound: addr_a,
                sockets: vec![a],
            },
            Handed { kind: Kind::Admin, requested: addr_b, bound: addr_b, sockets: vec![b] },
        ];
        let (old, new) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        send(&old, &handed).unwrap_or_else(|e| panic!("{e}"));
        drop(handed);
        let got = receive(&new).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].kind, got[0].bound, got[0].sockets.len()), (Kind::Plain, addr_a, 1));
        assert_eq!(got[0].requested.port(), 0);
        assert_eq!((got[1].kind, got[1].bound), (Kind::Admin, addr_b));
        // The originals are closed; the received copies are the same sockets, still listening.
        let _client = std::net::TcpStream::connect(addr_a).unwrap_or_else(|e| panic!("{e}"));
        got[0].sockets[0].set_nonblocking(false).unwrap_or_else(|e| panic!("{e}"));
        let (_, peer) = got[0].sockets[0].accept().unwrap_or_else(|e| panic!("{e}"));
        assert!(peer.ip().is_loopback());
        ready(&new).unwrap_or_else(|e| panic!("{e}"));
        wait_ready(&old).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_bad_description_is_refused() {
        assert!(parse("lb-handoff 2\nend\n", Vec::new()).is_err());
        assert!(parse("lb-handoff 1\nplain x y 1\nend\n", Vec::new()).is_err());
        let short = parse("lb-handoff 1\nplain 127.0.0.1:1 127.0.0.1:1 1\nend\n", Vec::new());
        assert!(short.is_err(), "a socket described but not sent");
    }
}

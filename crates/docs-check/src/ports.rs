//! Which TCP ports the processes a lesson started are still listening on.
//!
//! A learner follows the path in one shell: whatever a lesson leaves running holds its ports while they
//! read the next one, and a later lesson that binds the same port fails with "address in use". The
//! one-sitting check ([`crate::Options::session`]) asks, after each lesson, for the listening sockets
//! held by any process below the checker, i.e. the lesson's commands and everything they forked.
//! Looking only below the checker keeps the answer about the lessons: a port some other program on
//! the machine listens on is not the lesson's doing.
//!
//! Linux only: it reads `/proc/net/tcp`, `/proc/net/tcp6`, `/proc/PID/stat` and `/proc/PID/fd`.
//! A process that detached itself (a daemon that double-forks) is re-parented away from the checker
//! and is not seen; the lessons run every server in the foreground of its job.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One listening socket and the process holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub pid: u32,
    /// The process group: the background job of the lesson it belongs to.
    pub process_group: u32,
    /// The program's name, from `/proc/PID/comm`.
    pub program: String,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, pid {})", self.address, self.program, self.pid)
    }
}

/// The TCP sockets in LISTEN state held by descendants of `ancestor` (not by `ancestor` itself), sorted
/// by address. Empty where `/proc` cannot be read.
pub fn listening_below(ancestor: u32) -> Vec<Listener> {
    let listening = listening_inodes();
    if listening.is_empty() {
        return Vec::new();
    }
    let processes = processes();
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for process in descendants(ancestor, &processes) {
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", process.pid)) else { continue };
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else { continue };
            let link = link.to_string_lossy();
            let Some(inode) = link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) else {
                continue;
            };
            let Ok(inode) = inode.parse::<u64>() else { continue };
            // A socket shared by several processes (a forked worker) is reported once.
            if let Some(address) = listening.get(&inode).filter(|_| seen.insert(inode)) {
                found.push(Listener {
                    address: *address,
                    pid: process.pid,
                    process_group: process.group,
                    program: fs::read_to_string(format!("/proc/{}/comm", process.pid))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default(),
                });
            }
        }
    }
    found.sort_by_key(|l| (l.address, l.pid));
    found
}

/// The process group of the calling process. Every command the checker runs leads a group of its own,
/// so a listener in the caller's group was not started by a lesson (a test's own helper, say).
pub fn own_process_group() -> Option<u32> {
    fs::read_to_string("/proc/self/stat").ok().and_then(|s| parse_stat(&s)).map(|p| p.group)
}

#[derive(Debug, Clone, Copy)]
struct Process {
    pid: u32,
    parent: u32,
    group: u32,
}

fn processes() -> Vec<Process> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|name| name.parse::<u32>().ok()))
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parse_stat(&s)))
        .collect()
}

/// `pid (comm) state ppid pgrp ...`: the name may hold spaces and parentheses, so fields are counted
/// from its last `)`.
fn parse_stat(stat: &str) -> Option<Process> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let _state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some(Process { pid, parent, group })
}

fn descendants(ancestor: u32, processes: &[Process]) -> Vec<Process> {
    let mut children: HashMap<u32, Vec<Process>> = HashMap::new();
    for process in processes {
        children.entry(process.parent).or_default().push(*process);
    }
    let mut found = Vec::new();
    let mut queue = vec![ancestor];
    while let Some(pid) = queue.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            found.push(*child);
            queue.push(child.pid);
        }
    }
    found
}

/// Inode -> local address of every TCP socket in LISTEN state.
fn listening_inodes() -> HashMap<u64, SocketAddr> {
    let mut found = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            found.extend(text.lines().skip(1).filter_map(parse_tcp_line));
        }
    }
    found
}

/// A line of `/proc/net/tcp{,6}`: `sl local_address rem_address st ... uid timeout inode`, the
/// address as hex words in host (little-endian) order and the port in hex; state `0A` is LISTEN.
fn parse_tcp_line(line: &str) -> Option<(u64, SocketAddr)> {
    const LISTEN: &str = "0A";
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&LISTEN) {
        return None;
    }
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words[..] {
        [v4] => IpAddr::V4(Ipv4Addr::from(v4.to_be_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, word) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    let inode = fields.get(9)?.parse().ok()?;
    Some((inode, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines_only() {
        // 127.0.0.1:8080 listening, stored as the little-endian word 0x0100007F.
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1";
        assert_eq!(parse_tcp_line(v4), Some((4242, "127.0.0.1:8080".parse().expect("address"))));
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_tcp_line(&established), None);
        // ::1 port 9000.
        let v6 = "   1: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A \
                  00000000:00000000 00:00000000 00000000     0        0 77 1";
        assert_eq!(parse_tcp_line(v6), Some((77, "[::1]:9000".parse().expect("address"))));
    }

    #[test]
    fn stat_names_may_hold_spaces_and_parentheses() {
        let stat = "4321 (tokio (worker) 1) S 100 4300 100 0 -1 4194560";
        let process = parse_stat(stat).expect("parses");
        assert_eq!((process.pid, process.parent, process.group), (4321, 100, 4300));
    }

    const CHILD: &str = "DOCS_CHECK_LISTENER_CHILD";

    /// Not a test on its own: the listening process for the test below, which runs this test binary
    /// again with only this test and [`CHILD`] set to a file for the port (no other program that can
    /// listen is sure to exist).
    #[test]
    fn listener_child() {
        let Some(port_file) = std::env::var_os(CHILD) else { return };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
        let port = listener.local_addr().expect("bound").port();
        fs::write(port_file, port.to_string()).expect("write the port");
        std::thread::sleep(std::time::Duration::from_secs(30));
    }

    #[test]
    fn finds_the_port_a_child_listens_on_until_it_exits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let exe = std::env::current_exe().expect("test binary");
        let mut child = std::process::Command::new(exe)
            .args(["--exact", "ports::tests::listener_child", "--test-threads=1"])
            .env(CHILD, &port_file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("re-run the test binary");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let port: u16 = loop {
            if let Some(port) = fs::read_to_string(&port_file).ok().and_then(|p| p.parse().ok()) {
                break port;
            }
            assert!(std::time::Instant::now() < deadline, "the child did not write its port");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let found = listening_below(std::process::id());
        assert!(
            found.iter().any(|l| l.address == address && l.pid == child.id() && l.process_group != 0),
            "{address} held by pid {} not found in {found:?}",
            child.id()
        );
        let _ = child.kill();
        let _ = child.wait();
        let after = listening_below(std::process::id());
        assert!(after.iter().all(|l| l.address != address), "{after:?}");
    }
}

//! The operator's block list: addresses and prefixes refused with `blocked`, read from a
//! file and reloaded without a restart (the file's modification time is polled, and
//! SIGHUP reloads at once).
//!
//! The file has one entry a line: an address (`203.0.113.7`, `2001:db8::1`) or a prefix
//! in CIDR form (`198.51.100.0/24`, `2001:db8:42::/48`). `#` starts a comment. A line that
//! does not parse is logged and skipped, so one typo never unblocks everyone else.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// Most entries a block list may hold; a larger file is cut here (and says so in the log).
/// Checking is a linear scan, and 100 000 prefixes is ~1 ms per new connection.
pub const MAX_BLOCK_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: u128,
    /// Prefix length in bits of the 128-bit (IPv4-mapped for IPv4) address.
    len: u32,
}

fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

fn mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

impl Net {
    pub fn parse(s: &str) -> Option<Net> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u32>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let len = match (addr, len) {
            (IpAddr::V4(_), Some(l)) if l <= 32 => l + 96,
            (IpAddr::V4(_), None) => 128,
            (IpAddr::V6(_), Some(l)) if l <= 128 => l,
            (IpAddr::V6(_), None) => 128,
            _ => return None,
        };
        Some(Net {
            addr: as_u128(addr) & mask(len),
            len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        as_u128(ip) & mask(self.len) == self.addr
    }
}

/// Parses a block-list file's text: the entries, and the lines that did not parse.
pub fn parse(text: &str) -> (Vec<Net>, Vec<String>) {
    let mut nets = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match Net::parse(line) {
            Some(n) if nets.len() < MAX_BLOCK_ENTRIES => nets.push(n),
            Some(_) => {}
            None => bad.push(line.to_string()),
        }
    }
    (nets, bad)
}

#[derive(Clone, Default)]
pub struct BlockList {
    path: Option<PathBuf>,
    state: Arc<RwLock<(Vec<Net>, Option<SystemTime>)>>,
}

impl BlockList {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads `path` now (a missing file is an empty list, logged).
    pub fn from_file(path: &Path) -> Self {
        let list = Self {
            path: Some(path.to_path_buf()),
            state: Arc::default(),
        };
        list.reload_if_changed(true);
        list
    }

    pub fn blocks(&self, ip: IpAddr) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.0.iter().any(|n| n.contains(ip))
    }

    pub fn len(&self) -> usize {
        self.state.read().unwrap_or_else(|e| e.into_inner()).0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads the file if its modification time changed (or always, with `force`).
    /// Returns whether it was read.
    pub fn reload_if_changed(&self, force: bool) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if !force && state.1 == mtime {
                return false;
            }
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read the block list, keeping the last one: {e}");
                return false;
            }
        };
        let (nets, bad) = parse(&text);
        for line in &bad {
            tracing::warn!(path = %path.display(), "block list: skipping a line that is not an address or prefix: {line}");
        }
        tracing::info!(path = %path.display(), entries = nets.len(), "block list loaded");
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = (nets, mtime);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn addresses_and_prefixes_of_both_families() {
        let (nets, bad) = parse(
            "# operators' list\n203.0.113.7\n198.51.100.0/24  # a range\n2001:db8:42::/48\nnonsense\n10.0.0.0/33\n",
        );
        assert_eq!(nets.len(), 3);
        assert_eq!(bad, vec!["nonsense".to_string(), "10.0.0.0/33".to_string()]);
        let blocked = |s: &str| nets.iter().any(|n| n.contains(ip(s)));
        assert!(blocked("203.0.113.7"));
        assert!(!blocked("203.0.113.8"));
        assert!(blocked("198.51.100.200"));
        assert!(blocked("::ffff:198.51.100.1"));
        assert!(blocked("2001:db8:42:ffff::1"));
        assert!(!blocked("2001:db8:43::1"));
    }

    #[test]
    fn reloads_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("duet-block-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("block.txt");
        std::fs::write(&path, "10.1.1.1\n").expect("write");
        let list = BlockList::from_file(&path);
        assert!(list.blocks(ip("10.1.1.1")));
        assert!(!list.reload_if_changed(false), "unchanged");
        std::fs::write(&path, "10.2.2.2\n").expect("write");
        assert!(list.reload_if_changed(true));
        assert!(!list.blocks(ip("10.1.1.1")));
        assert!(list.blocks(ip("10.2.2.2")));
    }
}

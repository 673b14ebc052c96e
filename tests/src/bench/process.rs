//! The processes a benchmark measures: the real `duet-relay` binary and the plain UDP
//! floor forwarder (this same binary's hidden `floor-forwarder` subcommand). Each runs as
//! its own process so that its CPU and memory are read from the OS the same way.
//!
//! A child is killed when its handle drops, so a benchmark that fails half-way leaves
//! nothing running.

use super::BenchError;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a child has to print its first line before the benchmark gives up on it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest wait for one `/status` answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest `/status` body read: the real one is about 1 KB.
const MAX_STATUS_BYTES: u64 = 256 * 1024;

/// A child process, killed on drop.
struct Guard {
    child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's first stdout line within [`STARTUP_TIMEOUT`], then keeps draining its
/// stdout on a thread so that a later `println!` in the child never blocks or fails.
fn first_line(child: &mut Child, what: &str) -> Result<String, BenchError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Process(format!("{what}: no stdout")))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Some(Ok(line))) => Ok(line),
        Ok(_) => Err(BenchError::Process(format!(
            "{what} exited before it was ready"
        ))),
        Err(_) => Err(BenchError::Process(format!(
            "{what} printed nothing within {STARTUP_TIMEOUT:?}"
        ))),
    }
}

/// The value of `key=` in a `duet-relay listening ...` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Where the relay binary is: `--relay-bin`, else `target/release/duet-relay` next to this
/// benchmark's own target folder.
pub fn default_relay_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // `target/release/duet-bench` or `target/debug/duet-bench`: the relay is measured as a
    // release build either way.
    let target = if dir
        .file_name()
        .is_some_and(|n| n == "release" || n == "debug")
    {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    };
    target.join("release").join("duet-relay")
}

/// Builds the relay binary in release mode (a no-op when it is up to date), so that the
/// figures are never those of a stale binary. `cargo run -p duet-tests` builds only the
/// relay's library, not its binary.
pub fn build_relay() -> Result<(), BenchError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "duet-relay",
            "--bin",
            "duet-relay",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .status()
        .map_err(|e| BenchError::Process(format!("cannot run cargo to build the relay: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Process(format!(
            "building the relay failed: {status}"
        )))
    }
}

/// How the benchmark starts a relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub bin: PathBuf,
    pub socket_buffer: usize,
    pub max_sessions: usize,
    pub idle_timeout_ms: u64,
    /// Extra flags passed through unchanged.
    pub extra_args: Vec<String>,
}

/// A running relay process.
pub struct RelayProcess {
    guard: Guard,
    pub pid: u32,
    pub http: SocketAddr,
    pub quic: SocketAddr,
    pub cert_hash: [u8; 32],
}

impl RelayProcess {
    pub fn start(opts: &RelayOptions) -> Result<RelayProcess, BenchError> {
        let mut cmd = Command::new(&opts.bin);
        cmd.args(["--quic-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--max-sessions", &opts.max_sessions.to_string()])
            // Every benchmark client comes from 127.0.0.1.
            .args(["--max-sessions-per-ip", &opts.max_sessions.to_string()])
            .args(["--idle-timeout-ms", &opts.idle_timeout_ms.to_string()])
            .args(["--socket-buffer", &opts.socket_buffer.to_string()])
            .args(&opts.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("DUET_BENCH_RELAY_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().map_err(|e| {
            BenchError::Process(format!(
                "cannot start the relay {}: {e}",
                opts.bin.display()
            ))
        })?;
        let pid = child.id();
        let mut guard = Guard { child };
        let line = first_line(&mut guard.child, "the relay")?;
        let bad = || BenchError::Process(format!("unexpected first line from the relay: {line:?}"));
        let http: SocketAddr = field(&line, "http")
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|a| a.trim_end_matches('/').parse().ok())
            .ok_or_else(bad)?;
        let quic: SocketAddr = field(&line, "quic")
            .and_then(|a| a.parse().ok())
            .ok_or_else(bad)?;
        let cert_hash = field(&line, "cert_sha256")
            .and_then(duet_certs::parse_fingerprint)
            .ok_or_else(bad)?;
        Ok(RelayProcess {
            guard,
            pid,
            http,
            quic,
            cert_hash,
        })
    }

    pub fn pid_str(&self) -> String {
        self.pid.to_string()
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Result<serde_json::Value, BenchError> {
        let body = http_get(self.http, "/status").await?;
        serde_json::from_str(&body)
            .map_err(|e| BenchError::Process(format!("/status is not JSON: {e}")))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.guard.child.try_wait(), Ok(None))
    }
}

/// Minimal HTTP/1.1 GET (the relay's HTTP side), with a deadline.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String, BenchError> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.take(MAX_STATUS_BYTES).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(STATUS_TIMEOUT, fetch)
        .await
        .map_err(|_| BenchError::Process(format!("GET {path}: no answer in {STATUS_TIMEOUT:?}")))?
        .map_err(|e| BenchError::Process(format!("GET {path}: {e}")))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(BenchError::Process(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        Ok(dechunk(body))
    } else {
        Ok(body.to_string())
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A running floor forwarder process (see [`super::floor`]).
pub struct FloorProcess {
    guard: Guard,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl FloorProcess {
    /// Starts `duet-bench floor-forwarder` (this executable) with the same socket buffers
    /// as the relay, stopping by itself after `max_seconds`.
    pub fn start(socket_buffer: usize, max_seconds: u64) -> Result<FloorProcess, BenchError> {
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::Process(format!("cannot find this executable: {e}")))?;
        let child = Command::new(exe)
            .args(["floor-forwarder", "--listen", "127.0.0.1:0"])
            .args(["--socket-buffer", &socket_buffer.to_string()])
            .args(["--max-seconds", &max_seconds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Process(format!("cannot start the floor forwarder: {e}")))?;
        let pid = child.id();
        let mut guard = Guard { child };
        let stdin = guard
            .child
            .stdin
            .take()
            .ok_or_else(|| BenchError::Process("floor forwarder: no stdin".into()))?;
        let stdout = guard
            .child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Process("floor forwarder: no stdout".into()))?;
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let line = answers
            .recv_timeout(STARTUP_TIMEOUT)
            .map_err(|_| BenchError::Process("the floor forwarder did not start".into()))?;
        let addr = field(&line, "udp")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| BenchError::Process(format!("floor forwarder said {line:?}")))?;
        Ok(FloorProcess {
            guard,
            stdin,
            answers,
            pid,
            addr,
        })
    }

    pub fn pid_str(&self) -> String {
        self.pid.to_string()
    }

    /// Datagrams and bytes forwarded so far (asked over the child's stdin).
    pub fn counters(&mut self) -> Result<(u64, u64), BenchError> {
        writeln!(self.stdin, "stats")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| BenchError::Process(format!("floor forwarder stdin: {e}")))?;
        let line = self
            .answers
            .recv_timeout(STATUS_TIMEOUT)
            .map_err(|_| BenchError::Process("the floor forwarder did not answer".into()))?;
        let num = |k| field(&line, k).and_then(|v| v.parse().ok());
        match (num("forwarded"), num("bytes")) {
            (Some(d), Some(b)) => Ok((d, b)),
            _ => Err(BenchError::Process(format!(
                "floor forwarder said {line:?}"
            ))),
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.guard.child.try_wait(), Ok(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_the_listening_line() {
        let line =
            "duet-relay listening http=http://127.0.0.1:8080 quic=127.0.0.1:4433 cert_sha256=ab";
        assert_eq!(field(line, "quic"), Some("127.0.0.1:4433"));
        assert_eq!(field(line, "http"), Some("http://127.0.0.1:8080"));
        assert_eq!(field(line, "cert_sha256"), Some("ab"));
        assert_eq!(field(line, "nope"), None);
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"), "abcdef");
    }
}

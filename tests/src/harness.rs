//! Helpers for the end-to-end tests: start a real relay on ephemeral loopback ports,
//! connect real QUIC clients to it, read its HTTP side, and wait on events with a
//! deadline. Patience (how long any one wait may take before the test fails) comes from
//! `DUET_TEST_PATIENCE_S` (default 30 s): slow shared machines raise it, nothing sleeps.

use duet_client::{Client, ClientError, ConnectOptions};
use duet_proto::{Matched, ServerMsg};
use duet_relay::{Config, RelayHandle};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one wait may take before a test gives up.
pub fn patience() -> Duration {
    let secs = std::env::var("DUET_TEST_PATIENCE_S")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// A relay configuration for tests: loopback, ephemeral ports, no per-address limit that
/// loopback tests (all from 127.0.0.1) would hit.
pub fn test_config() -> Config {
    Config {
        quic_addr: "127.0.0.1:0".parse().expect("literal address"),
        http_addr: "127.0.0.1:0".parse().expect("literal address"),
        max_sessions_per_ip: 10_000,
        // The handshake rate per address follows --max-sessions-per-ip by default; every
        // test client is 127.0.0.1, so that is what lets hundreds connect at once.
        ..Config::default()
    }
}

pub struct TestRelay {
    pub relay: RelayHandle,
}

impl TestRelay {
    pub async fn start(config: Config) -> TestRelay {
        let relay = duet_relay::start(config).await.expect("relay starts");
        TestRelay { relay }
    }

    pub async fn default() -> TestRelay {
        Self::start(test_config()).await
    }

    pub fn hash(&self) -> [u8; 32] {
        self.relay
            .fingerprint()
            .and_then(|h| duet_certs::parse_fingerprint(&h))
            .expect("development certificate")
    }

    /// Connect options with no certificate hash (set one, or rely on system roots).
    pub fn opts_without_hash(&self) -> ConnectOptions {
        ConnectOptions::new(format!("https://{}", self.relay.quic_addr), None)
    }

    pub fn opts(&self) -> ConnectOptions {
        ConnectOptions::new(
            format!("https://{}", self.relay.quic_addr),
            Some(self.hash()),
        )
    }

    /// Connects and says Hello.
    pub async fn client(&self, name: &str, interests: &[&str]) -> Client {
        let mut c = within("connect", Client::connect(&self.opts()))
            .await
            .expect("connects");
        let interests: Vec<String> = interests.iter().map(|s| s.to_string()).collect();
        within("Welcome", c.hello(name, &interests, None))
            .await
            .expect("welcome");
        c
    }

    /// `GET path` on the relay's HTTP side: (status code, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.relay.http_addr, path).await
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.http_get("/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// Polls `/status` until `check` holds (or the patience runs out).
    pub async fn status_until(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + patience();
        loop {
            let s = self.status().await;
            if check(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last status: {s}"
            );
            // Polling interval for readiness, not a wait for the event itself.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Minimal HTTP/1.1 GET over a fresh TCP connection.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    within("HTTP response", async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("HTTP connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("HTTP write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("HTTP read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (code, body)
    })
    .await
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

/// Awaits `fut` within the patience, failing the test with `what` otherwise.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(patience(), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {:?} waiting for {what}", patience()),
    }
}

/// One single-fragment audio datagram of pairing `match_id`.
pub fn media_datagram(match_id: u64, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    duet_proto::MediaHeader {
        match_id,
        track: duet_proto::Track::Audio,
        seq,
        frame: seq,
        frag_index: 0,
        frag_count: 1,
        keyframe: true,
        capture_us: 0,
        ref_frame: seq,
    }
    .write_datagram(payload, &mut buf);
    buf
}

/// Sends `datagram` from `from` until exactly those bytes arrive at `to`. Datagrams are
/// unreliable by contract, so one not seen within 200 ms is sent again (on loopback that
/// happens only where a test impairs the path on purpose).
pub async fn deliver(from: &Client, to: &Client, datagram: &[u8]) {
    within("a datagram to arrive unchanged", async {
        loop {
            from.send_datagram(datagram).expect("send");
            if let Ok(d) =
                tokio::time::timeout(Duration::from_millis(200), to.recv_datagram()).await
            {
                if d.expect("receive")[..] == datagram[..] {
                    break;
                }
            }
        }
    })
    .await;
}

/// Waits for `Matched`, skipping other messages.
pub async fn matched(c: &mut Client) -> Matched {
    c.wait_for(patience(), "Matched", |m| match m {
        ServerMsg::Matched(m) => Some(m.clone()),
        _ => None,
    })
    .await
    .expect("matched")
}

/// Waits for the first message `pick` accepts.
pub async fn expect_msg<T>(
    c: &mut Client,
    what: &'static str,
    pick: impl FnMut(&ServerMsg) -> Option<T>,
) -> Result<T, ClientError> {
    c.wait_for(patience(), what, pick).await
}

/// Waits for a fatal `Error` from the relay and returns it (code name, message).
pub async fn fatal_error(c: &mut Client) -> (duet_proto::ErrorCode, String) {
    expect_msg(c, "a fatal Error", |m| match m {
        ServerMsg::Error(e) if e.fatal => Some((e.code, e.message.clone())),
        _ => None,
    })
    .await
    .expect("the relay explains the refusal")
}

/// Sends `n` single-fragment datagrams of pairing `match_id` (sequence numbers from
/// `first_seq`), without waiting for anything.
pub fn send_burst(from: &Client, match_id: u64, first_seq: u32, n: u32, payload: &[u8]) {
    for seq in first_seq..first_seq + n {
        from.send_datagram(&media_datagram(match_id, seq, payload))
            .expect("send");
    }
}

/// Receives until `n` datagrams of pairing `match_id` have arrived at `to` and returns
/// how many of any other pairing came meanwhile. Datagrams are unreliable by contract,
/// but on an unimpaired loopback path none is lost, so a missing one fails the test.
pub async fn receive_exactly(to: &Client, match_id: u64, n: usize) -> usize {
    within("every datagram sent to arrive", async {
        let (mut mine, mut others) = (0, 0);
        while mine < n {
            let d = to.recv_datagram().await.expect("receive");
            if duet_proto::media::peek_match_id(&d) == Some(match_id) {
                mine += 1;
            } else {
                others += 1;
            }
        }
        others
    })
    .await
}

/// Takes every datagram already waiting at `to` (returns at the first 20 ms with none)
/// and returns those of pairing `match_id`. For absence checks made after the relay's
/// counters showed where every datagram went.
pub async fn drain_datagrams(to: &Client, match_id: u64) -> usize {
    let mut found = 0;
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(20), to.recv_datagram()).await
    {
        if duet_proto::media::peek_match_id(&d) == Some(match_id) {
            found += 1;
        }
    }
    found
}

/// Sends `n` datagrams from `from` to `to` on `match_id` and checks that all `n` arrived.
pub async fn exchange_counted(from: &Client, to: &Client, match_id: u64, first_seq: u32, n: u32) {
    send_burst(from, match_id, first_seq, n, b"counted");
    receive_exactly(to, match_id, n as usize).await;
}

/// The relay binary (debug build), built first if needed: tests that need a real process
/// (signals, exit codes) spawn it.
pub fn relay_binary() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "duet-relay", "--bin", "duet-relay"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the relay binary builds");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join("duet-relay")
}

/// A relay running as its own process.
pub struct RelayProcess {
    pub child: tokio::process::Child,
    pub quic_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub hash: [u8; 32],
}

impl RelayProcess {
    /// Starts the binary on loopback ephemeral ports with `args` added, and reads its
    /// first line (`duet-relay listening http=… quic=… cert_sha256=…`).
    pub async fn spawn(args: &[&str]) -> RelayProcess {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(relay_binary())
            .args(["--quic-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--max-sessions-per-ip", "10000"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("relay starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = within("the relay's first line", lines.next_line())
            .await
            .expect("read")
            .expect("a line");
        // Keep reading so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} in {line}"))
                .to_string()
        };
        let http = field("http=");
        let http_addr = http
            .trim_start_matches("http://")
            .parse()
            .expect("http address");
        let quic_addr = field("quic=").parse().expect("quic address");
        let hash = duet_certs::parse_fingerprint(&field("cert_sha256=")).expect("fingerprint");
        RelayProcess {
            child,
            quic_addr,
            http_addr,
            hash,
        }
    }

    pub fn opts(&self) -> ConnectOptions {
        ConnectOptions::new(format!("https://{}", self.quic_addr), Some(self.hash))
    }

    pub async fn client(&self, name: &str) -> Client {
        let mut c = within("connect", Client::connect(&self.opts()))
            .await
            .expect("connects");
        within("Welcome", c.hello(name, &[], None))
            .await
            .expect("welcome");
        c
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// A pair that must keep working beside whatever a test does to the relay; every check
/// counts arrivals against what was sent.
pub struct HealthyPair {
    pub a: Client,
    pub b: Client,
    pub match_id: u64,
    seq: u32,
}

impl HealthyPair {
    pub async fn new(relay: &TestRelay) -> Self {
        let mut a = relay.client("Healthy A", &["unique-healthy"]).await;
        let mut b = relay.client("Healthy B", &["unique-healthy"]).await;
        let match_id = matched(&mut a).await.match_id;
        matched(&mut b).await;
        Self {
            a,
            b,
            match_id,
            seq: 0,
        }
    }

    /// Media (every datagram sent arrives: an unimpaired loopback path loses none) and
    /// chat still flow both ways.
    pub async fn still_talks(&mut self) {
        self.seq += 100;
        exchange_counted(&self.a, &self.b, self.match_id, self.seq, 20).await;
        exchange_counted(&self.b, &self.a, self.match_id, self.seq + 50, 20).await;
        let text = format!("ping {}", self.seq);
        self.a.send_chat(self.match_id, &text).await.expect("chat");
        let (_, got) = within("healthy chat", self.b.recv_chat())
            .await
            .expect("line");
        assert_eq!(got, text);
    }
}

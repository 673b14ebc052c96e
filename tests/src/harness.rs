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

//! The relay's HTTP side counts what happened, and its development certificate is what
//! browsers need: the fingerprint it serves is the one QUIC presents, and rotating it keeps
//! every open session. A real certificate from PEM files serves HTTPS and QUIC, and
//! replacing the files (noticed by polling, or on SIGHUP) moves both to the new one while
//! calls go on; the WebSocket fallback is then `wss:` on the same port.

use duet_client::call::{self, CallOptions};
use duet_client::{connect_raw, Client};
use duet_tests::harness::*;
use std::time::Duration;

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[tokio::test]
async fn status_and_metrics_count_what_happened() {
    let relay = TestRelay::default().await;
    let (code, body) = relay.http_get("/health").await;
    assert_eq!((code, body.trim()), (200, "ok"));
    let s = relay.status().await;
    for key in [
        "sessions",
        "waiting",
        "pairs",
        "datagrams_forwarded",
        "bytes_forwarded",
        "datagrams_dropped",
        "uptime_s",
    ] {
        assert!(s[key].is_u64(), "/status has {key}: {s}");
    }
    assert_eq!(s["sessions"], 0);

    let mk = |name: &str| {
        let mut o = CallOptions::new(relay.opts(), name);
        o.duration = Duration::from_secs(1);
        o.video_kbps = 300;
        o
    };
    let waiting = relay.client("Waiting", &["only-me"]).await;
    let (a, b) = tokio::join!(call::run(mk("A")), call::run(mk("B")));
    let (a, b) = (a.expect("A"), b.expect("B"));
    let received = a.datagrams_received + b.datagrams_received;
    let s = relay
        .status_until("the call's sessions closed", |s| s["sessions"] == 1)
        .await;
    assert_eq!(s["waiting"], 1, "{s}");
    assert_eq!(s["pairs"], 0);
    assert_eq!(s["matches_made"], 1);
    assert_eq!(s["sessions_opened"], 3);
    let forwarded = s["datagrams_forwarded"].as_u64().expect("number");
    assert!(
        forwarded >= received,
        "forwarded {forwarded} < received {received}"
    );
    assert!(forwarded <= a.datagrams_sent + b.datagrams_sent);
    assert!(s["bytes_forwarded"].as_u64() > Some(forwarded * 50));
    assert_eq!(
        s["datagrams_dropped"].as_u64(),
        Some(0),
        "nothing dropped: {s}"
    );

    let (code, text) = relay.http_get("/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "duet_datagrams_forwarded_total"), forwarded);
    assert_eq!(metric(&text, "duet_sessions"), 1);
    assert_eq!(metric(&text, "duet_waiting"), 1);
    assert_eq!(metric(&text, "duet_matches_made_total"), 1);
    assert!(text.contains("# TYPE duet_bytes_forwarded_total counter"));
    drop(waiting);
}

#[tokio::test]
async fn the_served_fingerprint_is_the_certificate_quic_presents() {
    let relay = TestRelay::default().await;
    let (code, served) = relay.http_get("/certificate.sha256").await;
    assert_eq!(code, 200);
    assert_eq!(served.trim(), relay.relay.fingerprint().expect("dev cert"));
    assert_eq!(served.trim().len(), 64);
    // Trusting exactly that hash works (clients in these tests all do); another does not.
    let mut wrong = relay.opts();
    wrong.cert_hash = Some([7u8; 32]);
    assert!(connect_raw(&wrong).await.is_err());
    // The page learns the QUIC port and hash from /config.json.
    let (_, cfg) = relay.http_get("/config.json").await;
    let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    assert_eq!(cfg["quic_port"], relay.relay.quic_addr.port());
    assert_eq!(cfg["certificate_sha256"], served.trim());
}

#[tokio::test]
async fn rotating_the_certificate_keeps_open_sessions() {
    let relay = TestRelay::default().await;
    let old_opts = relay.opts();
    let mut a = relay.client("A", &[]).await;
    let mut b = relay.client("B", &[]).await;
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;

    let new_hash = relay.relay.rotate_certificate().expect("rotates");
    let (_, served) = relay.http_get("/certificate.sha256").await;
    assert_eq!(served.trim(), new_hash);
    assert_ne!(Some(new_hash.clone()), old_opts.cert_hash.map(hex_of));

    // The pair on the old certificate keeps talking.
    exchange_counted(&a, &b, m, 1, 10).await;
    a.send_chat(m, "still here").await.expect("chat");
    assert_eq!(
        within("chat", b.recv_chat()).await.map(|x| x.1).as_deref(),
        Some("still here")
    );

    // New sessions get the new certificate: the old hash no longer works, the new one does.
    assert!(connect_raw(&old_opts).await.is_err());
    let mut c = within("connect with the new hash", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    c.hello("C", &[], None).await.expect("welcome");
    let s = relay.status().await;
    assert_eq!(s["certificate_rotations"], 1);
}

fn hex_of(h: [u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A self-signed certificate for `localhost`, valid from an hour ago for ten days, with a
/// key of its own.
fn localhost_certificate() -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(10);
    let cert = params.self_signed(&key).expect("self-signed");
    (cert, key)
}

/// Where the relay reads its PEM files from.
struct PemFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl PemFiles {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("duet-pem-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Replaces both files the way a renewal tool does: each written aside, then renamed
    /// over the old one (key first, so for a moment the pair does not match; the relay
    /// must refuse that and try again).
    fn write(&self, cert: &rcgen::Certificate, key: &rcgen::KeyPair) {
        for (path, text) in [(&self.key, key.serialize_pem()), (&self.cert, cert.pem())] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).expect("write");
            std::fs::rename(&aside, path).expect("rename");
        }
    }

    fn config(&self) -> duet_relay::Config {
        let mut config = test_config();
        config.cert = Some(self.cert.clone());
        config.key = Some(self.key.clone());
        config
    }
}

/// A TLS client that trusts only `roots`.
fn tls_connector(roots: &[&rcgen::Certificate]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.der().clone()).expect("root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
}

/// `GET path` over HTTPS, trusting only `roots`: the response, or why TLS failed.
async fn https_get(
    addr: std::net::SocketAddr,
    roots: &[&rcgen::Certificate],
    path: &str,
) -> Result<String, std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tls_connector(roots);
    within("HTTPS", async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut s = connector.connect(name, tcp).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
    .await
}

/// Polls `/status` over HTTPS (trusting either certificate, whichever the relay presents
/// now) until `check` holds.
async fn https_status_until(
    addr: std::net::SocketAddr,
    roots: &[&rcgen::Certificate],
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    within(what, async {
        loop {
            let response = https_get(addr, roots, "/status").await.expect("TLS");
            let (_, body) = response.split_once("\r\n\r\n").expect("a body");
            let status: serde_json::Value = serde_json::from_str(body).expect("JSON");
            if check(&status) {
                return status;
            }
            // Polling interval for readiness, not a wait for the event itself.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn sha256(cert: &rcgen::Certificate) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(cert.der()).into()
}

/// Connect options pinning `cert`'s hash.
fn pinned(relay: &TestRelay, cert: &rcgen::Certificate) -> duet_client::ConnectOptions {
    let mut opts = relay.opts_without_hash();
    opts.cert_hash = Some(sha256(cert));
    opts
}

/// A real deployment: certificate and key from PEM files. The QUIC side presents that
/// certificate, the page is served over HTTPS (a secure context for other devices), and
/// there is no development fingerprint to serve.
#[tokio::test]
async fn a_real_certificate_from_pem_files_serves_https_and_quic() {
    let (cert, key) = localhost_certificate();
    let files = PemFiles::new("serve");
    files.write(&cert, &key);
    let relay = TestRelay::start(files.config()).await;
    assert!(relay.relay.https);
    assert_eq!(
        relay.relay.fingerprint(),
        None,
        "no development certificate"
    );

    // HTTPS, trusting exactly that certificate.
    let addr = relay.relay.http_addr;
    let health = https_get(addr, &[&cert], "/health")
        .await
        .expect("TLS handshake");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let cert_page = https_get(addr, &[&cert], "/certificate.sha256")
        .await
        .expect("TLS handshake");
    assert!(cert_page.starts_with("HTTP/1.1 404"), "{cert_page}");
    assert!(
        cert_page.contains("no fingerprint is needed"),
        "{cert_page}"
    );

    // QUIC presents the same certificate: a client pinning its hash gets in.
    let mut c = within("connect", Client::connect(&pinned(&relay, &cert)))
        .await
        .expect("connects");
    within("hello", c.hello("Real", &[], None))
        .await
        .expect("welcome");
}

/// How a test makes the relay take up the new files.
#[derive(Clone, Copy)]
enum Trigger {
    /// The relay notices the files changed (it polls their modification times).
    FileChange,
    /// What SIGHUP does, called in-process.
    Reload,
}

/// Replaces the PEM files under a live call and checks that the call goes on while HTTPS
/// and QUIC move to the new certificate, and the old one is no longer presented.
async fn reload_with_a_call_live(trigger: Trigger) {
    let (old, old_key) = localhost_certificate();
    let files = PemFiles::new(match trigger {
        Trigger::FileChange => "poll",
        Trigger::Reload => "sighup",
    });
    files.write(&old, &old_key);
    let mut config = files.config();
    config.reload_poll_ms = match trigger {
        Trigger::FileChange => 100,
        // Only the explicit reload can have moved the relay to the new files.
        Trigger::Reload => 3_600_000,
    };
    let relay = TestRelay::start(config).await;
    let opts = pinned(&relay, &old);
    let connect = |name: &'static str| {
        let opts = opts.clone();
        async move {
            let mut c = within("connect", Client::connect(&opts))
                .await
                .expect("connects");
            within("hello", c.hello(name, &["pem".to_string()], None))
                .await
                .expect("welcome");
            c
        }
    };
    let (mut a, mut b) = (connect("A").await, connect("B").await);
    let m = matched(&mut a).await.match_id;
    assert_eq!(matched(&mut b).await.match_id, m);
    exchange_counted(&a, &b, m, 0, 20).await;
    let addr = relay.relay.http_addr;
    let (new, new_key) = localhost_certificate();
    let both = [&old, &new];
    let reloads = https_status_until(addr, &both, "status", |_| true).await["certificate_reloads"]
        .as_u64()
        .expect("a number");

    files.write(&new, &new_key);
    if let Trigger::Reload = trigger {
        relay.relay.reload().await.expect("reloads");
    }
    let s = https_status_until(addr, &both, "the new certificate taken up", |s| {
        s["certificate_reloads"].as_u64() > Some(reloads)
    })
    .await;
    if let Trigger::Reload = trigger {
        assert_eq!(s["certificate_reloads"].as_u64(), Some(reloads + 1), "{s}");
    }

    // The call made on the old certificate goes on: every datagram both ways, and chat.
    exchange_counted(&a, &b, m, 100, 20).await;
    exchange_counted(&b, &a, m, 200, 20).await;
    a.send_chat(m, "across the reload").await.expect("chat");
    assert_eq!(
        within("chat", b.recv_chat()).await,
        Some((m, "across the reload".to_string()))
    );
    let s = https_status_until(addr, &both, "status", |_| true).await;
    assert_eq!(s["pairs"], 1, "{s}");

    // HTTPS presents the new certificate only.
    let health = https_get(addr, &[&new], "/health")
        .await
        .expect("the new certificate is trusted");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let refused = https_get(addr, &[&old], "/health").await;
    assert!(refused.is_err(), "the old certificate is gone: {refused:?}");

    // So does QUIC: pinned to the new hash gets in, pinned to the old does not.
    let mut c = within("connect", Client::connect(&pinned(&relay, &new)))
        .await
        .expect("connects with the new hash");
    within("hello", c.hello("After", &[], None))
        .await
        .expect("welcome");
    assert!(connect_raw(&opts).await.is_err(), "the old hash is refused");
}

#[tokio::test]
async fn new_pem_files_are_picked_up_with_a_call_live() {
    reload_with_a_call_live(Trigger::FileChange).await;
}

#[tokio::test]
async fn a_reload_like_sighup_moves_https_and_quic_with_a_call_live() {
    reload_with_a_call_live(Trigger::Reload).await;
}

/// With a real certificate the WebSocket fallback is `wss:` on the HTTPS port: a client
/// that trusts the certificate upgrades, says Hello and is welcomed.
#[tokio::test]
async fn a_real_certificate_serves_the_websocket_fallback_over_tls() {
    use duet_proto::{ClientMsg, Hello, ServerMsg, PROTOCOL_VERSION};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (cert, key) = localhost_certificate();
    let files = PemFiles::new("wss");
    files.write(&cert, &key);
    let relay = TestRelay::start(files.config()).await;
    let addr = relay.relay.http_addr;

    let connector = tls_connector(&[&cert]);
    let tcp = within("TCP", tokio::net::TcpStream::connect(addr))
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = within("TLS", connector.connect(name, tcp))
        .await
        .expect("TLS handshake");
    let url = format!("wss://localhost:{}{}", addr.port(), duet_proto::ws::WS_PATH);
    let (mut ws, _) = within("upgrade", tokio_tungstenite::client_async(url, stream))
        .await
        .expect("the WebSocket upgrade over TLS");

    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        name: "Secure".into(),
        interests: vec![],
        resume: None,
        visitor: None,
        media: duet_client::native_caps(),
    });
    let mut m = vec![duet_proto::ws::KIND_CONTROL];
    m.extend_from_slice(&hello.encode());
    ws.send(Message::binary(m)).await.expect("send Hello");
    let welcome = within("Welcome", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b)))
                    if b.first() == Some(&duet_proto::ws::KIND_CONTROL) =>
                {
                    if let Ok(ServerMsg::Welcome(w)) = ServerMsg::decode(&b[1..]) {
                        break w;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the WebSocket ended before Welcome: {other:?}"),
            }
        }
    })
    .await;
    assert!(!welcome.resumed);
    https_status_until(addr, &[&cert], "one session over wss", |s| {
        s["sessions"] == 1
    })
    .await;
}

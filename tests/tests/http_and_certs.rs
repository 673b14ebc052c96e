//! The relay's HTTP side counts what happened, and its development certificate is what
//! browsers need: the fingerprint it serves is the one QUIC presents, and rotating it keeps
//! every open session.

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

/// A real deployment: certificate and key from PEM files. The QUIC side presents that
/// certificate, the page is served over HTTPS (a secure context for other devices), and
/// there is no development fingerprint to serve.
#[tokio::test]
async fn a_real_certificate_from_pem_files_serves_https_and_quic() {
    use sha2::Digest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(10);
    let cert = params.self_signed(&key).expect("self-signed");
    let dir = std::env::temp_dir().join(format!("duet-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");

    let mut config = test_config();
    config.cert = Some(cert_path);
    config.key = Some(key_path);
    let relay = TestRelay::start(config).await;
    assert!(relay.relay.https);
    assert_eq!(
        relay.relay.fingerprint(),
        None,
        "no development certificate"
    );

    // HTTPS, trusting exactly that certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let get = |path: &'static str| {
        let connector = connector.clone();
        let addr = relay.relay.http_addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let mut s = connector.connect(name, tcp).await.expect("TLS handshake");
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.expect("write");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let health = within("HTTPS /health", get("/health")).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let cert_page = within("HTTPS /certificate.sha256", get("/certificate.sha256")).await;
    assert!(cert_page.starts_with("HTTP/1.1 404"), "{cert_page}");
    assert!(
        cert_page.contains("no fingerprint is needed"),
        "{cert_page}"
    );

    // QUIC presents the same certificate: a client pinning its hash gets in.
    let hash: [u8; 32] = sha2::Sha256::digest(cert.der()).into();
    let mut opts = relay.opts_without_hash();
    opts.cert_hash = Some(hash);
    let mut c = within("connect", Client::connect(&opts))
        .await
        .expect("connects");
    within("hello", c.hello("Real", &[], None))
        .await
        .expect("welcome");
}

//! The relay's life around its sessions: SIGTERM drains (the real binary, a call in
//! progress), a real certificate is reloaded with sessions live, and the command line answers
//! `--help` and bad flags as a command should.

use duet_client::Client;
use duet_proto::*;
use duet_tests::harness::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_mid_call_drains_tells_both_and_exits_zero_within_the_drain_time() {
    const DRAIN_S: u64 = 3;
    let relay = RelayProcess::spawn(&["--drain-s", &DRAIN_S.to_string()]).await;
    let mut a = relay.client("A").await;
    let mut b = relay.client("B").await;
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;
    exchange_counted(&a, &b, m, 0, 20).await;
    assert_eq!(http_get(relay.http_addr, "/health").await.0, 200);

    let signalled = Instant::now();
    relay.signal("TERM");
    for c in [&mut a, &mut b] {
        let within_ms = expect_msg(c, "Draining", |msg| match msg {
            ServerMsg::Draining { within_ms } => Some(*within_ms),
            _ => None,
        })
        .await
        .expect("told the relay is draining");
        assert_eq!(u64::from(within_ms), DRAIN_S * 1000);
    }
    // Draining: load balancers are told to send nobody new; the call goes on.
    assert_eq!(http_get(relay.http_addr, "/health").await.0, 503);
    exchange_counted(&a, &b, m, 100, 20).await;
    exchange_counted(&b, &a, m, 200, 20).await;

    // Then both are closed with `shutting_down`.
    for c in [&mut a, &mut b] {
        let (code, message) = fatal_error(c).await;
        assert_eq!(code, ErrorCode::ShuttingDown, "{message}");
    }
    let mut child = relay.child;
    let status = within("the relay exits", child.wait()).await.expect("wait");
    assert!(status.success(), "exit status {status}");
    let took = signalled.elapsed();
    // Generous: the drain time plus the bounded close waits, on a shared machine.
    assert!(
        took < Duration::from_secs(DRAIN_S + 10),
        "exited {took:?} after SIGTERM"
    );
}

#[tokio::test]
async fn a_relay_draining_with_nobody_left_exits_at_once() {
    let relay = RelayProcess::spawn(&["--drain-s", "120"]).await;
    let a = relay.client("A").await;
    a.close().await;
    relay.signal("TERM");
    let mut child = relay.child;
    let status = within("the relay exits", child.wait()).await.expect("wait");
    assert!(status.success(), "exit status {status}");
}

fn write_cert(dir: &std::path::Path, name: &str) -> [u8; 32] {
    use sha2::Digest;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(10);
    let cert = params.self_signed(&key).expect("self-signed");
    // Write to temporary names and rename, as a certificate manager does, so the relay
    // never reads half a pair.
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    std::fs::rename(&k, dir.join("key.pem")).expect("rename");
    std::fs::rename(&c, dir.join("cert.pem")).expect("rename");
    sha2::Sha256::digest(cert.der()).into()
}

#[tokio::test]
async fn a_changed_certificate_is_reloaded_with_sessions_live() {
    let dir = std::env::temp_dir().join(format!("duet-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let old = write_cert(&dir, "old");
    let mut config = test_config();
    config.cert = Some(dir.join("cert.pem"));
    config.key = Some(dir.join("key.pem"));
    config.reload_poll_ms = 100;
    let relay = TestRelay::start(config).await;
    let with = |hash: [u8; 32]| {
        let mut o = relay.opts_without_hash();
        o.cert_hash = Some(hash);
        o
    };
    let mut a = Client::connect(&with(old)).await.expect("connect");
    a.hello("A", &[], None).await.expect("welcome");
    let mut b = Client::connect(&with(old)).await.expect("connect");
    b.hello("B", &[], None).await.expect("welcome");
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;

    // The files change; the relay notices by itself.
    let new = write_cert(&dir, "new");
    within("the certificate reloaded", async {
        while relay.relay.status().certificate_reloads == 0 {
            // Polling the relay's counter; the wait itself is bounded by `within`.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The call goes on, both ways, nothing lost.
    exchange_counted(&a, &b, m, 0, 20).await;
    exchange_counted(&b, &a, m, 100, 20).await;
    // Newcomers get the new certificate, and only it.
    let mut c = within("connect", Client::connect(&with(new)))
        .await
        .expect("the new certificate is served");
    within("hello", c.hello("C", &[], None))
        .await
        .expect("welcome");
    assert!(
        duet_client::connect_raw(&with(old)).await.is_err(),
        "the old certificate is gone"
    );
    assert_eq!(relay.relay.status().sessions, 3);
}

#[test]
fn help_exits_zero_and_a_bad_flag_exits_two_with_the_usage() {
    let bin = relay_binary();
    let run = |arg: &str| {
        std::process::Command::new(&bin)
            .arg(arg)
            .output()
            .expect("the relay runs")
    };
    let help = run("--help");
    assert_eq!(help.status.code(), Some(0), "--help exits 0");
    let out = String::from_utf8_lossy(&help.stdout);
    assert!(
        out.contains("Usage: duet-relay"),
        "--help prints the usage: {out}"
    );
    assert!(help.stderr.is_empty(), "nothing on stderr for --help");
    let bad = run("--no-such-flag");
    assert_eq!(bad.status.code(), Some(2), "a bad flag exits 2");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--no-such-flag") && err.contains("Usage"),
        "{err}"
    );
    assert!(!err.contains("backtrace"), "no backtrace: {err}");
}

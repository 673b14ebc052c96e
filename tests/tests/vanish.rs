//! A partner whose connection vanishes (no close, nothing at all: a phone in a tunnel) is
//! noticed within the relay's idle timeout: the other person hears `PeerReconnecting` at
//! once, and when the resume grace period runs out, `PeerLeft` and back to the queue. The
//! silence is made by `duet-impair` blacking out the path, as a real network would.

use duet_proto::*;
use duet_tests::harness::*;
use duet_tests::impair::{Profile, Shaper, ShaperConfig};

#[tokio::test]
async fn a_vanished_partner_is_noticed_within_the_idle_timeout() {
    let mut config = test_config();
    config.idle_timeout_ms = 1_500;
    config.resume_grace_s = 1;
    let relay = TestRelay::start(config).await;
    let shaper = Shaper::start(ShaperConfig::new(
        "127.0.0.1:0".parse().expect("literal"),
        relay.relay.quic_addr,
        Profile::lan(),
    ))
    .await
    .expect("shaper starts");

    let mut a = relay.client("Stays", &[]).await;
    let mut via_shaper = relay.opts();
    via_shaper.relay = format!("https://{}", shaper.local_addr());
    let mut b = within(
        "connect through the shaper",
        duet_client::Client::connect(&via_shaper),
    )
    .await
    .expect("connects");
    within("hello", b.hello("Vanishes", &[], None))
        .await
        .expect("welcome");
    assert_eq!(matched(&mut a).await.partner_name, "Vanishes");
    matched(&mut b).await;

    shaper.blackout(true);
    expect_msg(&mut a, "PeerReconnecting", |m| {
        matches!(m, ServerMsg::PeerReconnecting).then_some(())
    })
    .await
    .expect("the relay notices the silence");
    let reason = expect_msg(&mut a, "PeerLeft", |m| match m {
        ServerMsg::PeerLeft { reason } => Some(*reason),
        _ => None,
    })
    .await
    .expect("and gives up after the grace period");
    assert_eq!(reason, LeaveReason::Disconnected);
    expect_msg(&mut a, "re-queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("and puts the partner back in the queue");
    relay
        .status_until("the vanished session is gone", |s| {
            s["sessions"] == 1 && s["waiting"] == 1
        })
        .await;
}

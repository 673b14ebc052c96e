//! End-to-end encryption through a real relay: what the relay hands on is sealed (no
//! known pattern survives, the payloads do not compress), a bit flipped in transit drops
//! exactly that frame, and chat lines travel sealed.
//!
//! The tap: the relay forwards each datagram's bytes unchanged (`forward.rs` hands on the
//! very `Bytes` it read) and each chat frame as it came, so what the partner's connection
//! receives, read here before any opening, is what crossed the relay.

use bytes::Bytes;
use duet_client::e2ee::PairingCrypto;
use duet_client::Client;
use duet_proto::media::{fragment, Reassembler};
use duet_proto::{ChatFrame, ClientMsg, MediaHeader, ServerMsg, Track};
use duet_tests::harness::{matched, within, TestRelay};
use flate2::{write::DeflateEncoder, Compression};
use std::io::Write;

/// What every frame's plaintext is made of: a relay that saw it would find it.
const PATTERN: &[u8] = b"DUET-KNOWN-PATTERN/";

/// Frames sent in the test; every tenth is changed in transit.
const FRAMES: u32 = 120;

/// Sends this side's key and waits for the partner's; returns the agreed state.
async fn agree(c: &mut Client, match_id: u64, secret: [u8; 32]) -> PairingCrypto {
    let mut crypto = PairingCrypto::new(match_id, secret);
    c.send(&crypto.key_share()).await.expect("KeyShare");
    let public = c
        .wait_for(duet_tests::harness::patience(), "PeerKey", |m| match m {
            ServerMsg::PeerKey {
                match_id: m,
                public,
            } if *m == match_id => Some(*public),
            _ => None,
        })
        .await
        .expect("the partner's key, through the relay");
    assert_eq!(crypto.on_peer_key(match_id, &public), Ok(true));
    crypto
}

/// Deflate at its best: random bytes come out no smaller.
fn deflated_len(bytes: &[u8]) -> usize {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
    e.write_all(bytes).expect("deflate");
    e.finish().expect("deflate").len()
}

fn plaintext(frame: u32) -> Vec<u8> {
    let len = 700 + (frame as usize % 5) * 37;
    PATTERN.iter().copied().cycle().take(len).collect()
}

fn header(match_id: u64, frame: u32) -> MediaHeader {
    MediaHeader {
        match_id,
        track: Track::Video,
        seq: 0,
        frame,
        frag_index: 0,
        frag_count: 1,
        keyframe: frame == 0,
        capture_us: 5_000 + u64::from(frame),
        ref_frame: frame.saturating_sub(1),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn what_the_relay_forwards_is_sealed_and_a_flipped_bit_drops_only_that_frame() {
    let relay = TestRelay::default().await;
    let mut a = relay.client("Ana", &[]).await;
    let mut b = relay.client("Bob", &[]).await;
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;
    let (mut ca, mut cb) = tokio::join!(
        agree(&mut a, m, rand::random()),
        agree(&mut b, m, rand::random())
    );
    assert_eq!(
        ca.safety_code(),
        cb.safety_code(),
        "one safety code on both sides"
    );

    // Ana seals each frame and sends it as one datagram; every tenth has one bit flipped
    // after sealing (as a relay or the network could). Bob reads each before the next is
    // sent: nothing is resent, the count is what arrived of what was sent.
    let (mut sealed, mut seq, mut buf) = (Vec::new(), 0u32, Vec::new());
    let mut forwarded: Vec<Bytes> = Vec::new();
    let mut reassembler = Reassembler::new();
    let (mut opened, mut refused, mut flipped) = (0u32, 0u32, 0u32);
    let mut plain_all = Vec::new();
    for n in 0..FRAMES {
        let h = header(m, n);
        let clear = plaintext(n);
        plain_all.extend_from_slice(&clear);
        ca.seal_frame(&h, &clear, &mut sealed).expect("sealed");
        let mut datagrams = Vec::new();
        fragment(h, &sealed, usize::MAX, &mut seq, &mut buf, |d| {
            datagrams.push(d.to_vec())
        });
        assert_eq!(datagrams.len(), 1);
        let mut d = datagrams.remove(0);
        if n % 10 == 5 {
            let last = d.len() - 1;
            d[last - n as usize % 16] ^= 0x10;
            flipped += 1;
        }
        a.send_datagram(&d).expect("send");
        let got = within("the frame to arrive", b.recv_datagram())
            .await
            .expect("receive");
        let (gh, off) = MediaHeader::read(&got).expect("a media header");
        assert_eq!((gh.match_id, gh.frame), (m, n), "the frame as sent");
        forwarded.push(got.slice(off..));
        let frame = reassembler.push(&gh, &got[off..]).expect("one whole frame");
        let mut out = Vec::new();
        if cb.open_frame(&frame, &mut out) {
            assert_eq!(out, clear, "frame {n} opens to what was sealed");
            opened += 1;
        } else {
            refused += 1;
        }
    }
    assert_eq!(
        (opened, refused),
        (FRAMES - flipped, flipped),
        "each changed frame dropped, every other one opened"
    );
    assert_eq!(cb.unopened.video, u64::from(flipped), "and counted");

    // The relay's view: no run of the pattern, and bytes that do not compress, while the
    // same frames in clear compress to almost nothing (so the check can fail).
    assert!(
        !forwarded.iter().any(|p| contains(p, &PATTERN[..12])),
        "a known pattern of the source appears in what the relay forwarded"
    );
    let all: Vec<u8> = forwarded.iter().flat_map(|p| p.iter().copied()).collect();
    let (sealed_ratio, clear_ratio) = (
        deflated_len(&all) as f64 / all.len() as f64,
        deflated_len(&plain_all) as f64 / plain_all.len() as f64,
    );
    assert!(
        sealed_ratio > 0.99,
        "forwarded payloads compress to {sealed_ratio:.3} of their size: not random-looking"
    );
    assert!(
        clear_ratio < 0.1,
        "the plaintext compresses ({clear_ratio:.3})"
    );

    // Chat: the line crosses the relay sealed, and opens at Bob.
    let secret = "meet me at the KNOWN-PATTERN café";
    let line = ca.seal_line(secret).expect("sealed line");
    a.send_chat_frame(m, &line).await.expect("chat");
    let (lm, got) = within("the chat line", b.recv_chat_frame())
        .await
        .expect("a chat frame");
    assert_eq!(lm, m);
    let ChatFrame::Sealed { sealed, .. } = &got else {
        panic!("a sealed line crossed the relay, not {got:?}");
    };
    assert!(
        !contains(sealed, b"KNOWN-PATTERN"),
        "the line's text is not in what the relay forwarded"
    );
    assert_eq!(cb.open_line(&got).as_deref(), Some(secret));

    // Bob's key share sent again (as after a resume) changes nothing: the same key.
    b.send(&ClientMsg::KeyShare {
        match_id: m,
        public: match cb.key_share() {
            ClientMsg::KeyShare { public, .. } => public,
            _ => unreachable!(),
        },
    })
    .await
    .expect("KeyShare again");
    let again = within(
        "the same key again",
        a.wait_for(
            duet_tests::harness::patience(),
            "PeerKey",
            |msg| match msg {
                ServerMsg::PeerKey { public, .. } => Some(*public),
                _ => None,
            },
        ),
    )
    .await
    .expect("PeerKey");
    assert_eq!(
        ca.on_peer_key(m, &again),
        Ok(false),
        "the agreed keys stand"
    );
}

/// Registers `secret`'s public key for the next pairing and returns the public key.
async fn register(c: &mut Client, secret: [u8; 32]) -> [u8; 32] {
    let public = duet_proto::e2ee::KeyPair::from_secret(secret).public();
    c.send(&ClientMsg::NextKey { public })
        .await
        .expect("NextKey");
    public
}

#[tokio::test]
async fn keys_registered_ahead_come_in_matched_and_each_serves_one_pairing() {
    let relay = TestRelay::default().await;
    // Ana waits with a key registered; Bob is paired the moment he arrives, before he
    // could register one: Bob gets Ana's key in Matched, Ana gets Bob's as PeerKey.
    let mut a = relay.client("Ana", &[]).await;
    let ka1 = register(&mut a, [1; 32]).await;
    relay
        .status_until("Ana waiting", |s| s["waiting"] == 1)
        .await;
    let mut b = relay.client("Bob", &[]).await;
    let (ma, mb) = (matched(&mut a).await, matched(&mut b).await);
    assert_eq!((ma.your_key, ma.partner_key), (Some(ka1), None));
    assert_eq!((mb.your_key, mb.partner_key), (None, Some(ka1)));

    // Cleo waits with her key; Ana registers her next one, then presses Next and meets
    // Cleo: each has the other's key at once, and the relay says which of theirs it gave.
    let mut c = relay.client("Cleo", &[]).await;
    let kc = register(&mut c, [3; 32]).await;
    let ka2 = register(&mut a, [2; 32]).await;
    relay
        .status_until("Cleo waiting", |s| s["waiting"] == 1)
        .await;
    a.send(&ClientMsg::Next {
        match_id: Some(ma.match_id),
    })
    .await
    .expect("Next");
    let (mac, mca) = (matched(&mut a).await, matched(&mut c).await);
    assert_eq!(mac.match_id, mca.match_id);
    assert_eq!((mac.your_key, mac.partner_key), (Some(ka2), Some(kc)));
    assert_eq!((mca.your_key, mca.partner_key), (Some(kc), Some(ka2)));

    // Cleo presses Next without registering again, and meets Bob (requeued when Ana
    // left): her used key is not given out a second time.
    c.send(&ClientMsg::Next {
        match_id: Some(mca.match_id),
    })
    .await
    .expect("Next");
    let (mcb, mbc) = (matched(&mut c).await, matched(&mut b).await);
    assert_eq!(mcb.match_id, mbc.match_id);
    assert_eq!((mcb.your_key, mcb.partner_key), (None, None));
    assert_eq!((mbc.your_key, mbc.partner_key), (None, None));
}

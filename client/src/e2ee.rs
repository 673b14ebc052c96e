//! One pairing's end-to-end encryption, as the native client runs it: its own key pair,
//! the keys agreed with the partner, the chat line counter, and what failed to open. A
//! pure state machine over [`duet_proto::e2ee`] (the caller brings the random secret and
//! does the sending), so every rule is tested without sockets.
//!
//! The rules (the browser's `web-client/app/wire/e2ee.js` follows the same):
//! * a new pairing, a new key pair: the one registered ahead ([`KeyAhead`]) when `Matched`
//!   says the partner has it, else a fresh one whose
//!   [`key_share`](PairingCrypto::key_share) goes to the relay; a resumed `Matched` (the
//!   same match id) keeps the pairing's state and sends the same key again;
//! * the partner's first key stands: a different `PeerKey` for the same pairing is refused
//!   (an honest partner never changes keys mid-call; a relay swapping keys would);
//! * nothing is sent before the keys are agreed, and a frame or line that does not open
//!   is dropped and counted, never used; a chat line in clear is never shown (a relay
//!   could write one itself).

use duet_proto::e2ee::{Aad, E2eeError, KeyPair, Kind, PairKeys, PUBLIC_KEY_BYTES};
use duet_proto::media::Frame;
use duet_proto::{ChatFrame, ClientMsg, MediaHeader};

/// What failed to open, per kind, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Unopened {
    pub audio: u64,
    pub video: u64,
    pub chat: u64,
    /// Chat lines that came in clear (refused: only sealed lines are shown).
    pub plain_chat: u64,
    /// `PeerKey`s that tried to change the pairing's agreed key.
    pub changed_keys: u64,
}

#[derive(Debug)]
pub struct PairingCrypto {
    match_id: u64,
    mine: KeyPair,
    keys: Option<PairKeys>,
    /// The next chat line's number (this side's direction).
    next_line: u32,
    pub unopened: Unopened,
}

impl PairingCrypto {
    /// A fresh key pair for the pairing `match_id`, from 32 random bytes.
    pub fn new(match_id: u64, secret: [u8; 32]) -> Self {
        Self {
            match_id,
            mine: KeyPair::from_secret(secret),
            keys: None,
            next_line: 0,
            unopened: Unopened::default(),
        }
    }

    pub fn match_id(&self) -> u64 {
        self.match_id
    }

    /// The message that gives the partner this side's public key.
    pub fn key_share(&self) -> ClientMsg {
        ClientMsg::KeyShare {
            match_id: self.match_id,
            public: self.mine.public(),
        }
    }

    /// The keys are agreed: media and chat can go.
    pub fn ready(&self) -> bool {
        self.keys.is_some()
    }

    /// The safety code's words, once agreed.
    pub fn safety_code(&self) -> Option<String> {
        self.keys.as_ref().map(|k| k.safety_code.words())
    }

    /// The safety code's emoji, once agreed.
    pub fn safety_emoji(&self) -> Option<String> {
        self.keys.as_ref().map(|k| k.safety_code.emoji())
    }

    /// The partner's key arrived (`PeerKey`). `Ok(true)`: the keys are now agreed;
    /// `Ok(false)`: the same key again (after a resume), nothing changes.
    pub fn on_peer_key(
        &mut self,
        match_id: u64,
        public: &[u8; PUBLIC_KEY_BYTES],
    ) -> Result<bool, E2eeError> {
        if match_id != self.match_id {
            return Ok(false); // about another pairing
        }
        if let Some(k) = &self.keys {
            if k.peer_public == *public {
                return Ok(false);
            }
            self.unopened.changed_keys += 1;
            return Err(E2eeError::BadPeerKey);
        }
        self.keys = Some(PairKeys::derive(&self.mine, public, self.match_id)?);
        Ok(true)
    }

    /// Seals one media frame (its header as `fragment` will write it, `seq` and fragment
    /// fields aside) into `out`. Refused before the keys are agreed.
    pub fn seal_frame(
        &mut self,
        header: &MediaHeader,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), E2eeError> {
        let (Some(keys), Some(kind)) = (self.keys.as_mut(), Kind::of_track(header.track)) else {
            return Err(E2eeError::Unopened);
        };
        keys.seal(&Aad::media(header, kind), payload, out)
    }

    /// Opens a frame reassembled from this pairing's datagrams into `out`; a frame that
    /// does not open is counted. The match id in the associated data is this pairing's,
    /// so a frame whose header was rewritten from another pairing does not open.
    pub fn open_frame(&mut self, frame: &Frame, out: &mut Vec<u8>) -> bool {
        let Some(kind) = Kind::of_track(frame.track) else {
            return false;
        };
        let aad = Aad {
            match_id: self.match_id,
            kind,
            number: frame.frame,
            keyframe: frame.keyframe,
            capture_us: frame.capture_us,
            ref_frame: frame.ref_frame,
        };
        let opened = self
            .keys
            .as_ref()
            .is_some_and(|k| k.open(&aad, &frame.data, out).is_ok());
        if !opened {
            match kind {
                Kind::Audio => self.unopened.audio += 1,
                _ => self.unopened.video += 1,
            }
        }
        opened
    }

    /// A chat line, sealed, with the next line number.
    pub fn seal_line(&mut self, text: &str) -> Result<ChatFrame, E2eeError> {
        let Some(keys) = self.keys.as_mut() else {
            return Err(E2eeError::Unopened);
        };
        let number = self.next_line;
        let mut sealed = Vec::new();
        keys.seal(
            &Aad::chat(self.match_id, number),
            text.as_bytes(),
            &mut sealed,
        )?;
        self.next_line = number.wrapping_add(1);
        Ok(ChatFrame::Sealed { number, sealed })
    }

    /// The text of a chat frame from the partner on this pairing's stream, if it opens.
    pub fn open_line(&mut self, frame: &ChatFrame) -> Option<String> {
        match frame {
            ChatFrame::Sealed { number, sealed } => {
                let mut out = Vec::new();
                let text = self
                    .keys
                    .as_ref()
                    .filter(|k| {
                        k.open(&Aad::chat(self.match_id, *number), sealed, &mut out)
                            .is_ok()
                    })
                    .and_then(|_| String::from_utf8(out).ok());
                if text.is_none() {
                    self.unopened.chat += 1;
                }
                text
            }
            ChatFrame::Line { .. } => {
                self.unopened.plain_chat += 1;
                None
            }
            ChatFrame::Open { .. } => None,
        }
    }
}

/// The key pair registered with the relay for this client's next pairing
/// (`ClientMsg::NextKey`), so that the partner gets the public half in `Matched` and
/// neither side waits for a `KeyShare` to cross the relay. At most one is outstanding: a
/// new one is registered only once the relay has used the last (`Matched::your_key`).
#[derive(Debug, Default)]
pub struct KeyAhead {
    outstanding: Option<([u8; 32], [u8; PUBLIC_KEY_BYTES])>,
}

impl KeyAhead {
    pub fn new() -> Self {
        Self::default()
    }

    /// A key pair to register from 32 random bytes, unless one is outstanding already.
    pub fn register(&mut self, secret: [u8; 32]) -> Option<ClientMsg> {
        if self.outstanding.is_some() {
            return None;
        }
        let public = KeyPair::from_secret(secret).public();
        self.outstanding = Some((secret, public));
        Some(ClientMsg::NextKey { public })
    }

    /// The secret for a new pairing whose `Matched` says the relay gave the partner
    /// `your_key`: the registered one (`(secret, true)`: the partner has it already), or
    /// else `fresh` (`(fresh, false)`: send it in a `KeyShare`). A `your_key` that is not
    /// the registered key cannot be used (a relay's mistake): `fresh`, and the partner
    /// refuses it, so the pairing stays unencrypted and sends nothing.
    pub fn secret_for(
        &mut self,
        your_key: Option<[u8; PUBLIC_KEY_BYTES]>,
        fresh: [u8; 32],
    ) -> ([u8; 32], bool) {
        match (your_key, self.outstanding) {
            (Some(k), Some((secret, public))) if k == public => {
                self.outstanding = None;
                (secret, true)
            }
            _ => (fresh, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_proto::media::{fragment, Reassembler};
    use duet_proto::Track;

    /// Two sides of pairing `m` with their keys agreed.
    fn agreed(m: u64) -> (PairingCrypto, PairingCrypto) {
        let mut a = PairingCrypto::new(m, [1; 32]);
        let mut b = PairingCrypto::new(m, [2; 32]);
        let (ClientMsg::KeyShare { public: pa, .. }, ClientMsg::KeyShare { public: pb, .. }) =
            (a.key_share(), b.key_share())
        else {
            panic!("key shares");
        };
        assert_eq!(a.on_peer_key(m, &pb), Ok(true));
        assert_eq!(b.on_peer_key(m, &pa), Ok(true));
        (a, b)
    }

    fn header(m: u64, track: Track, frame: u32) -> MediaHeader {
        MediaHeader {
            match_id: m,
            track,
            seq: 0,
            frame,
            frag_index: 0,
            frag_count: 1,
            keyframe: frame == 0,
            capture_us: 1_000 + u64::from(frame),
            ref_frame: frame.saturating_sub(1),
        }
    }

    /// Seals a frame, cuts it into datagrams, lets `tamper` change them in transit, and
    /// returns what the receiving side makes of them.
    fn through(
        a: &mut PairingCrypto,
        b: &mut PairingCrypto,
        h: MediaHeader,
        payload: &[u8],
        tamper: impl Fn(&mut Vec<u8>),
    ) -> Option<Vec<u8>> {
        let mut sealed = Vec::new();
        a.seal_frame(&h, payload, &mut sealed).expect("sealed");
        assert!(
            !sealed
                .windows(8)
                .any(|w| payload.windows(8).any(|p| p == w)),
            "no run of the plaintext survives sealing"
        );
        let mut datagrams = Vec::new();
        let (mut seq, mut buf) = (0, Vec::new());
        fragment(h, &sealed, 300, &mut seq, &mut buf, |d| {
            datagrams.push(d.to_vec())
        });
        let mut r = Reassembler::new();
        let mut opened = None;
        for mut d in datagrams {
            tamper(&mut d);
            let Ok((dh, off)) = MediaHeader::read(&d) else {
                continue;
            };
            if dh.match_id != b.match_id() {
                continue; // the receiver's own filter: not this pairing
            }
            if let Some(f) = r.push(&dh, &d[off..]) {
                let mut out = Vec::new();
                if b.open_frame(&f, &mut out) {
                    opened = Some(out);
                }
            }
        }
        opened
    }

    #[test]
    fn frames_and_lines_go_both_ways_once_the_keys_are_agreed() {
        let (mut a, mut b) = agreed(7);
        assert_eq!(a.safety_code(), b.safety_code());
        assert_eq!(a.safety_code().map(|w| w.split(' ').count()), Some(4));
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        let got = through(&mut a, &mut b, header(7, Track::Video, 0), &payload, |_| {});
        assert_eq!(got.as_deref(), Some(&payload[..]));
        let got = through(&mut b, &mut a, header(7, Track::Audio, 0), b"opus", |_| {});
        assert_eq!(got.as_deref(), Some(&b"opus"[..]));
        let line = a.seal_line("hello ✓").expect("sealed");
        assert!(matches!(line, ChatFrame::Sealed { number: 0, .. }));
        assert_eq!(b.open_line(&line).as_deref(), Some("hello ✓"));
        assert!(matches!(
            a.seal_line("again"),
            Ok(ChatFrame::Sealed { number: 1, .. })
        ));
        assert_eq!(b.unopened, Unopened::default());
    }

    #[test]
    fn a_flipped_bit_in_transit_drops_the_frame_and_counts_it() {
        let (mut a, mut b) = agreed(7);
        let payload = vec![0x33; 700];
        // A bit in the last payload byte of the second fragment.
        let got = through(&mut a, &mut b, header(7, Track::Video, 0), &payload, |d| {
            if let Ok((h, _)) = MediaHeader::read(d) {
                if h.frag_index == 1 {
                    let last = d.len() - 1;
                    d[last] ^= 0x10;
                }
            }
        });
        assert_eq!(got, None);
        assert_eq!(b.unopened.video, 1);
        // The next frame is untouched and opens.
        let got = through(&mut a, &mut b, header(7, Track::Video, 1), &payload, |_| {});
        assert!(got.is_some());
    }

    #[test]
    fn a_header_rewritten_to_another_pairing_is_refused() {
        // The relay (or anyone on the path) moves a's frame for pairing 7 into pairing 8,
        // whose receiver has its own keys: it does not open there.
        let (mut a, _) = agreed(7);
        let (_, mut c) = agreed(8);
        let got = through(&mut a, &mut c, header(7, Track::Video, 0), b"face", |d| {
            let Ok((mut h, off)) = MediaHeader::read(d) else {
                return;
            };
            h.match_id = 8;
            let payload = d[off..].to_vec();
            h.write_datagram(&payload, d);
        });
        assert_eq!(got, None);
        assert_eq!(c.unopened.video, 1);
        // Even with pairing 7's own keys, a changed capture time does not open.
        let (mut a, mut b) = agreed(7);
        let got = through(&mut a, &mut b, header(7, Track::Video, 0), b"face", |d| {
            let Ok((mut h, off)) = MediaHeader::read(d) else {
                return;
            };
            h.capture_us += 1;
            let payload = d[off..].to_vec();
            h.write_datagram(&payload, d);
        });
        assert_eq!(got, None);
    }

    #[test]
    fn next_brings_new_keys_and_a_resume_keeps_them() {
        let (mut a, mut b) = agreed(7);
        let code = a.safety_code();
        // Next: a new pairing with the same person is a new key pair, new keys.
        let mut a2 = PairingCrypto::new(9, [3; 32]);
        let b2 = PairingCrypto::new(9, [4; 32]);
        let ClientMsg::KeyShare { public: pb2, .. } = b2.key_share() else {
            panic!()
        };
        a2.on_peer_key(9, &pb2).expect("agreed");
        assert_ne!(a2.safety_code(), code);
        let mut sealed = Vec::new();
        a2.seal_frame(&header(9, Track::Video, 0), b"new", &mut sealed)
            .expect("sealed");
        let old_frame = Frame {
            track: Track::Video,
            frame: 0,
            keyframe: true,
            capture_us: 1_000,
            ref_frame: 0,
            data: sealed,
        };
        assert!(
            !b.open_frame(&old_frame, &mut Vec::new()),
            "the old pairing's keys do not open it"
        );
        // A resume re-sends the partner's key: the same key changes nothing.
        let ClientMsg::KeyShare { public: pb, .. } = b.key_share() else {
            panic!()
        };
        assert_eq!(a.on_peer_key(7, &pb), Ok(false));
        assert_eq!(a.safety_code(), code);
        // A different key for the same pairing is refused, and the agreed keys stay.
        assert_eq!(a.on_peer_key(7, &[5; 32]), Err(E2eeError::BadPeerKey));
        assert_eq!(a.unopened.changed_keys, 1);
        assert_eq!(a.safety_code(), code);
        let line = a.seal_line("still us").expect("sealed");
        assert_eq!(b.open_line(&line).as_deref(), Some("still us"));
    }

    #[test]
    fn a_key_registered_ahead_serves_one_pairing_and_then_a_new_one_is_registered() {
        let mut ahead = KeyAhead::new();
        let Some(ClientMsg::NextKey { public }) = ahead.register([5; 32]) else {
            panic!("a key to register");
        };
        assert_eq!(public, KeyPair::from_secret([5; 32]).public());
        assert!(
            ahead.register([6; 32]).is_none(),
            "one outstanding at a time"
        );
        // Paired before the relay had the key: a fresh one, sent in a KeyShare; the
        // registered key stays for a later pairing.
        assert_eq!(ahead.secret_for(None, [7; 32]), ([7; 32], false));
        // The relay gave it to the partner: it is used, and a new one can be registered.
        assert_eq!(ahead.secret_for(Some(public), [8; 32]), ([5; 32], true));
        assert_eq!(
            ahead.secret_for(Some(public), [9; 32]),
            ([9; 32], false),
            "used once"
        );
        assert!(ahead.register([6; 32]).is_some());
        // A key this client never registered is not taken for its own.
        assert_eq!(ahead.secret_for(Some([1; 32]), [3; 32]), ([3; 32], false));
    }

    #[test]
    fn nothing_is_sealed_before_the_keys_are_agreed_and_plain_lines_are_never_shown() {
        let mut a = PairingCrypto::new(7, [1; 32]);
        assert!(!a.ready());
        assert!(a
            .seal_frame(&header(7, Track::Audio, 0), b"x", &mut Vec::new())
            .is_err());
        assert!(a.seal_line("x").is_err());
        let (_, mut b) = agreed(7);
        assert_eq!(
            b.open_line(&ChatFrame::Line {
                text: "written by the relay".into()
            }),
            None
        );
        assert_eq!(b.unopened.plain_chat, 1);
        assert_eq!(
            b.open_line(&ChatFrame::Sealed {
                number: 0,
                sealed: vec![0; 40]
            }),
            None
        );
        assert_eq!(b.unopened.chat, 1);
    }
}

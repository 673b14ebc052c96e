//! End-to-end encryption of a pairing's media and chat: the relay routes by the datagram
//! header and never holds a key, so it cannot see a face, hear a voice or read a line.
//!
//! Each side has an X25519 key pair per pairing and gives the public half to the partner
//! through the relay: registered ahead for its next pairing (`ClientMsg::NextKey`, which the
//! relay puts in the partner's `Matched`), or, when the pair was made before the relay had
//! it, sent at `Matched` (`ClientMsg::KeyShare`, relayed as `ServerMsg::PeerKey`). Both then derive, with
//! HKDF-SHA-256 salted with the match id, one AES-256-GCM key per direction; the side whose
//! public key sorts lower sends with the first. Every frame payload (audio, video) and chat
//! line is sealed where it is made and opened where it is used:
//!
//! * the nonce is the kind (audio, video, chat) and the frame or line number, never reused
//!   under one key ([`PairKeys::seal`] refuses a number that is not higher than the last);
//! * the associated data is the frame's part of the media header ([`Aad`]): the relay
//!   still routes, but a frame moved to another pairing, or given another capture time or
//!   reference, does not open.
//!
//! A fragment is a piece of the sealed frame, so parity and resends need no keys.
//! Next makes new keys (a new pairing, a new key pair); a resume keeps them. The
//! [`SafetyCode`] is four symbols from both public keys, for people to compare aloud: a
//! relay that swapped keys shows each side a different code (the idea of ZRTP's short
//! authentication string).
//!
//! Pure: the caller brings the random secret (`duet-client` from the OS, the browser from
//! WebCrypto, which runs the same steps: `web-client/app/wire/e2ee.js`, checked against
//! [`crate::vectors`]).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// An X25519 public key, as sent in `KeyShare`.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// What sealing adds to a payload: the AES-GCM tag.
pub const TAG_BYTES: usize = 16;
/// The HKDF salt's prefix (the match id, little-endian, follows).
pub const SALT_PREFIX: &[u8] = b"duet-e2ee-v1";
/// What the safety code's hash starts with.
pub const SAFETY_CODE_DOMAIN: &[u8] = b"duet-safety-code-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum E2eeError {
    /// The partner's key is a low-order point (the shared secret would be all zeros), or
    /// the same as ours: a broken or hostile key, never an honest one.
    #[error("the partner's key is not usable")]
    BadPeerKey,
    /// The frame or line number is not higher than the last one sealed under this key.
    #[error("frame number {0} already used under this key")]
    CounterReused(u32),
    /// The tag did not match: the payload or its header was changed, or it was sealed
    /// under another pairing's key.
    #[error("the payload does not open")]
    Unopened,
}

/// What is sealed: the nonce's first byte, so audio, video and chat never share a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio = 0,
    Video = 1,
    Chat = 2,
}

impl Kind {
    /// The media track's kind (parity is made from sealed fragments and is not sealed).
    pub fn of_track(track: crate::Track) -> Option<Kind> {
        match track {
            crate::Track::Audio => Some(Kind::Audio),
            crate::Track::Video => Some(Kind::Video),
            crate::Track::VideoParity => None,
        }
    }
}

/// The associated data of one sealed frame or chat line: what the relay must be able to
/// read but must not be able to change. For chat, `keyframe`, `capture_us` and `ref_frame`
/// are zero and `number` is the line's number in the pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad {
    pub match_id: u64,
    pub kind: Kind,
    /// The frame number (media) or line number (chat); also the nonce's counter.
    pub number: u32,
    pub keyframe: bool,
    pub capture_us: u64,
    pub ref_frame: u32,
}

/// The bytes of [`Aad`]: match id (8, LE), kind (1), number (4, LE), keyframe (1),
/// capture time (8, LE), reference (4, LE).
pub const AAD_BYTES: usize = 26;

impl Aad {
    /// A media frame's associated data, from its header.
    pub fn media(h: &crate::MediaHeader, kind: Kind) -> Self {
        Self {
            match_id: h.match_id,
            kind,
            number: h.frame,
            keyframe: h.keyframe,
            capture_us: h.capture_us,
            ref_frame: h.ref_frame,
        }
    }

    /// A chat line's associated data.
    pub fn chat(match_id: u64, number: u32) -> Self {
        Self {
            match_id,
            kind: Kind::Chat,
            number,
            keyframe: false,
            capture_us: 0,
            ref_frame: 0,
        }
    }

    pub fn bytes(&self) -> [u8; AAD_BYTES] {
        let mut b = [0u8; AAD_BYTES];
        b[0..8].copy_from_slice(&self.match_id.to_le_bytes());
        b[8] = self.kind as u8;
        b[9..13].copy_from_slice(&self.number.to_le_bytes());
        b[13] = u8::from(self.keyframe);
        b[14..22].copy_from_slice(&self.capture_us.to_le_bytes());
        b[22..26].copy_from_slice(&self.ref_frame.to_le_bytes());
        b
    }

    /// The 96-bit nonce: the kind, seven zero bytes, the number (big-endian).
    pub fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[0] = self.kind as u8;
        n[8..12].copy_from_slice(&self.number.to_be_bytes());
        n
    }
}

/// One side's key pair for one pairing.
pub struct KeyPair {
    secret: StaticSecret,
    public: [u8; PUBLIC_KEY_BYTES],
}

impl KeyPair {
    /// From 32 random bytes (the caller's random source; clamped as X25519 requires).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    pub fn public(&self) -> [u8; PUBLIC_KEY_BYTES] {
        self.public
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The symbols a safety code is written in: an emoji and the word to say for it.
pub const SAFETY_SYMBOLS: [(&str, &str); 64] = [
    ("🐶", "dog"),
    ("🐱", "cat"),
    ("🦊", "fox"),
    ("🐻", "bear"),
    ("🐼", "panda"),
    ("🐯", "tiger"),
    ("🦁", "lion"),
    ("🐮", "cow"),
    ("🐷", "pig"),
    ("🐸", "frog"),
    ("🐵", "monkey"),
    ("🐔", "chicken"),
    ("🐧", "penguin"),
    ("🐦", "bird"),
    ("🦉", "owl"),
    ("🐴", "horse"),
    ("🦄", "unicorn"),
    ("🐝", "bee"),
    ("🦋", "butterfly"),
    ("🐢", "turtle"),
    ("🐍", "snake"),
    ("🐙", "octopus"),
    ("🐬", "dolphin"),
    ("🐳", "whale"),
    ("🦈", "shark"),
    ("🦀", "crab"),
    ("🌵", "cactus"),
    ("🌲", "tree"),
    ("🌻", "sunflower"),
    ("🍄", "mushroom"),
    ("🌙", "moon"),
    ("⭐", "star"),
    ("🔥", "fire"),
    ("⚡", "lightning"),
    ("🌈", "rainbow"),
    ("🍎", "apple"),
    ("🍌", "banana"),
    ("🍇", "grapes"),
    ("🍓", "strawberry"),
    ("🍒", "cherries"),
    ("🍋", "lemon"),
    ("🍉", "watermelon"),
    ("🍍", "pineapple"),
    ("🥕", "carrot"),
    ("🌽", "corn"),
    ("🍕", "pizza"),
    ("🍩", "doughnut"),
    ("🎂", "cake"),
    ("☕", "coffee"),
    ("🎈", "balloon"),
    ("🎁", "gift"),
    ("🔑", "key"),
    ("🔔", "bell"),
    ("🎸", "guitar"),
    ("🎺", "trumpet"),
    ("🥁", "drum"),
    ("⚽", "football"),
    ("🏀", "basketball"),
    ("🚲", "bicycle"),
    ("🚗", "car"),
    ("🚀", "rocket"),
    ("⛵", "sailboat"),
    ("🏠", "house"),
    ("⏰", "clock"),
];

/// Four symbols (24 bits) that both sides of a pairing compute from both public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafetyCode(pub [u8; 4]);

impl SafetyCode {
    /// From the two public keys (in either order) and the match id: the first three bytes
    /// of SHA-256(domain ‖ lower key ‖ higher key ‖ match id LE), six bits per symbol.
    pub fn of(a: &[u8; 32], b: &[u8; 32], match_id: u64) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = Sha256::new();
        h.update(SAFETY_CODE_DOMAIN);
        h.update(lo);
        h.update(hi);
        h.update(match_id.to_le_bytes());
        let d = h.finalize();
        let bits = u32::from(d[0]) << 16 | u32::from(d[1]) << 8 | u32::from(d[2]);
        SafetyCode([
            (bits >> 18 & 63) as u8,
            (bits >> 12 & 63) as u8,
            (bits >> 6 & 63) as u8,
            (bits & 63) as u8,
        ])
    }

    /// The words to say aloud: "fox moon pizza rocket".
    pub fn words(&self) -> String {
        self.0
            .iter()
            .map(|&i| SAFETY_SYMBOLS[usize::from(i & 63)].1)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The emoji, in the same order.
    pub fn emoji(&self) -> String {
        self.0
            .iter()
            .map(|&i| SAFETY_SYMBOLS[usize::from(i & 63)].0)
            .collect()
    }
}

/// The keys of one pairing, both directions, and the last number sealed per kind.
pub struct PairKeys {
    send: Aes256Gcm,
    recv: Aes256Gcm,
    send_raw: [u8; 32],
    recv_raw: [u8; 32],
    /// The partner's public key, kept to tell a repeated `PeerKey` from a changed one.
    pub peer_public: [u8; PUBLIC_KEY_BYTES],
    pub safety_code: SafetyCode,
    /// The last number sealed, per [`Kind`].
    sealed: [Option<u32>; 3],
}

impl std::fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairKeys")
            .field("safety_code", &self.safety_code)
            .finish_non_exhaustive()
    }
}

impl PairKeys {
    /// Both directions' keys for the pairing `match_id`, from this side's key pair and the
    /// partner's public key: HKDF-SHA-256 (salt [`SALT_PREFIX`] ‖ match id LE, input the
    /// X25519 shared secret, info lower public key ‖ higher public key) gives 64 bytes; the
    /// first 32 key the lower key's side's sending, the next 32 the other side's.
    pub fn derive(mine: &KeyPair, theirs: &[u8; 32], match_id: u64) -> Result<Self, E2eeError> {
        if *theirs == mine.public {
            return Err(E2eeError::BadPeerKey);
        }
        let shared = mine.secret.diffie_hellman(&PublicKey::from(*theirs));
        if !shared.was_contributory() {
            return Err(E2eeError::BadPeerKey);
        }
        let okm = derive_okm(shared.as_bytes(), &mine.public, theirs, match_id);
        let (first, second) = okm.split_at(32);
        let mine_is_lower = mine.public < *theirs;
        let (send, recv) = if mine_is_lower {
            (first, second)
        } else {
            (second, first)
        };
        let mut send_raw = [0u8; 32];
        let mut recv_raw = [0u8; 32];
        send_raw.copy_from_slice(send);
        recv_raw.copy_from_slice(recv);
        Ok(Self {
            send: Aes256Gcm::new(&send_raw.into()),
            recv: Aes256Gcm::new(&recv_raw.into()),
            send_raw,
            recv_raw,
            peer_public: *theirs,
            safety_code: SafetyCode::of(&mine.public, theirs, match_id),
            sealed: [None; 3],
        })
    }

    /// The raw keys (sending, receiving), for the test vectors.
    pub fn raw(&self) -> ([u8; 32], [u8; 32]) {
        (self.send_raw, self.recv_raw)
    }

    /// Seals `plaintext` into `out` (cleared first): ciphertext then tag. Refuses a number
    /// not higher than the last sealed for its kind, so a nonce is never used twice.
    pub fn seal(
        &mut self,
        aad: &Aad,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), E2eeError> {
        let last = &mut self.sealed[aad.kind as usize];
        if last.is_some_and(|l| aad.number <= l) {
            return Err(E2eeError::CounterReused(aad.number));
        }
        *last = Some(aad.number);
        out.clear();
        out.reserve(plaintext.len() + TAG_BYTES);
        out.extend_from_slice(plaintext);
        let tag = self
            .send
            .encrypt_in_place_detached(Nonce::from_slice(&aad.nonce()), &aad.bytes(), out)
            .map_err(|_| E2eeError::Unopened)?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens what the partner sealed into `out` (cleared first).
    pub fn open(&self, aad: &Aad, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), E2eeError> {
        let Some(body_len) = sealed.len().checked_sub(TAG_BYTES) else {
            return Err(E2eeError::Unopened);
        };
        let (body, tag) = sealed.split_at(body_len);
        out.clear();
        out.extend_from_slice(body);
        self.recv
            .decrypt_in_place_detached(
                Nonce::from_slice(&aad.nonce()),
                &aad.bytes(),
                out,
                Tag::from_slice(tag),
            )
            .map_err(|_| {
                out.clear();
                E2eeError::Unopened
            })
    }
}

/// HKDF-SHA-256 of the shared secret into 64 bytes (see [`PairKeys::derive`]).
fn derive_okm(shared: &[u8; 32], a: &[u8; 32], b: &[u8; 32], match_id: u64) -> [u8; 64] {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut salt = SALT_PREFIX.to_vec();
    salt.extend_from_slice(&match_id.to_le_bytes());
    let mut info = [0u8; 64];
    info[..32].copy_from_slice(lo);
    info[32..].copy_from_slice(hi);
    let mut okm = [0u8; 64];
    // Cannot fail: 64 bytes is far below HKDF-SHA-256's limit of 255 × 32.
    let _ = Hkdf::<Sha256>::new(Some(&salt), shared).expand(&info, &mut okm);
    okm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(match_id: u64) -> (PairKeys, PairKeys) {
        let a = KeyPair::from_secret([7; 32]);
        let b = KeyPair::from_secret([9; 32]);
        (
            PairKeys::derive(&a, &b.public(), match_id).expect("a's keys"),
            PairKeys::derive(&b, &a.public(), match_id).expect("b's keys"),
        )
    }

    fn video(match_id: u64, number: u32) -> Aad {
        Aad {
            match_id,
            kind: Kind::Video,
            number,
            keyframe: number == 0,
            capture_us: 1_700_000_000_000_000 + u64::from(number),
            ref_frame: number.saturating_sub(1),
        }
    }

    #[test]
    fn each_side_opens_what_the_other_sealed_and_both_show_one_code() {
        let (mut a, mut b) = pair(42);
        assert_eq!(a.safety_code, b.safety_code);
        assert_eq!(a.raw().0, b.raw().1);
        assert_eq!(a.raw().1, b.raw().0);
        assert_ne!(a.raw().0, a.raw().1, "a key per direction");
        let (mut sealed, mut opened) = (Vec::new(), Vec::new());
        a.seal(&video(42, 0), b"a's keyframe", &mut sealed)
            .expect("sealed");
        assert_eq!(sealed.len(), b"a's keyframe".len() + TAG_BYTES);
        b.open(&video(42, 0), &sealed, &mut opened).expect("opens");
        assert_eq!(opened, b"a's keyframe");
        b.seal(&Aad::chat(42, 1), "hi ✓".as_bytes(), &mut sealed)
            .expect("sealed");
        a.open(&Aad::chat(42, 1), &sealed, &mut opened)
            .expect("opens");
        assert_eq!(opened, "hi ✓".as_bytes());
        // A side cannot open its own direction: the keys differ.
        assert_eq!(
            b.open(&Aad::chat(42, 1), &sealed, &mut opened),
            Err(E2eeError::Unopened)
        );
    }

    #[test]
    fn a_flipped_bit_or_a_changed_header_does_not_open() {
        let (mut a, b) = pair(42);
        let mut sealed = Vec::new();
        let mut opened = Vec::new();
        a.seal(&video(42, 5), &[0x55; 900], &mut sealed)
            .expect("sealed");
        for bit in [0, 7, 8 * 450 + 3, 8 * (sealed.len() - 1)] {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                b.open(&video(42, 5), &bad, &mut opened),
                Err(E2eeError::Unopened),
                "bit {bit}"
            );
            assert!(opened.is_empty(), "nothing of a refused frame is kept");
        }
        let changes: [fn(&mut Aad); 6] = [
            |h| h.match_id = 43,
            |h| h.kind = Kind::Audio,
            |h| h.number = 6,
            |h| h.keyframe = !h.keyframe,
            |h| h.capture_us += 1,
            |h| h.ref_frame = 0,
        ];
        for change in changes {
            let mut h = video(42, 5);
            change(&mut h);
            assert_eq!(
                b.open(&h, &sealed, &mut opened),
                Err(E2eeError::Unopened),
                "{h:?}"
            );
        }
        assert_eq!(
            b.open(&video(42, 5), &sealed[..10], &mut opened),
            Err(E2eeError::Unopened)
        );
        b.open(&video(42, 5), &sealed, &mut opened)
            .expect("the untouched frame opens");
    }

    #[test]
    fn a_new_pairing_has_new_keys() {
        let (mut a, _) = pair(42);
        // The same people meeting again get other keys from the match id alone, and a
        // new key pair (what clients make at every Matched) changes them again.
        let (_, b_again) = pair(43);
        let c = KeyPair::from_secret([11; 32]);
        let b_new = KeyPair::from_secret([9; 32]);
        let b_with_c = PairKeys::derive(&b_new, &c.public(), 42).expect("keys");
        let mut sealed = Vec::new();
        let mut opened = Vec::new();
        a.seal(&video(42, 1), b"for b at match 42", &mut sealed)
            .expect("sealed");
        assert_eq!(
            b_again.open(&video(42, 1), &sealed, &mut opened),
            Err(E2eeError::Unopened)
        );
        assert_eq!(
            b_with_c.open(&video(42, 1), &sealed, &mut opened),
            Err(E2eeError::Unopened)
        );
        assert_ne!(pair(42).0.safety_code, pair(43).0.safety_code);
    }

    #[test]
    fn a_number_is_never_sealed_twice() {
        let (mut a, _) = pair(1);
        let mut out = Vec::new();
        a.seal(&video(1, 3), b"x", &mut out).expect("sealed");
        assert_eq!(
            a.seal(&video(1, 3), b"y", &mut out),
            Err(E2eeError::CounterReused(3))
        );
        assert_eq!(
            a.seal(&video(1, 2), b"y", &mut out),
            Err(E2eeError::CounterReused(2))
        );
        // Each kind counts on its own.
        a.seal(
            &Aad {
                kind: Kind::Audio,
                ..video(1, 0)
            },
            b"z",
            &mut out,
        )
        .expect("audio 0");
        a.seal(&Aad::chat(1, 0), b"z", &mut out).expect("chat 0");
        a.seal(&video(1, 4), b"z", &mut out).expect("video 4");
    }

    #[test]
    fn keys_that_are_not_usable_are_refused() {
        let a = KeyPair::from_secret([7; 32]);
        assert_eq!(
            PairKeys::derive(&a, &[0; 32], 1).err(),
            Some(E2eeError::BadPeerKey),
            "the zero point"
        );
        assert_eq!(
            PairKeys::derive(&a, &a.public(), 1).err(),
            Some(E2eeError::BadPeerKey),
            "our own key reflected"
        );
    }

    #[test]
    fn the_safety_code_reads_as_four_words_and_four_emoji() {
        let (a, _) = pair(42);
        let words = a.safety_code.words();
        assert_eq!(words.split(' ').count(), 4, "{words}");
        assert_eq!(a.safety_code.emoji().chars().count(), 4);
        let mut seen = std::collections::HashSet::new();
        for (emoji, word) in SAFETY_SYMBOLS {
            assert!(seen.insert(word) && seen.insert(emoji), "{word} twice");
            assert_eq!(emoji.chars().count(), 1, "{word}: one code point");
        }
    }
}

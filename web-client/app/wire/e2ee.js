// @ts-check
/**
 * @file End-to-end encryption of a pairing's media and chat, in the browser: the same
 * steps as `duet_proto::e2ee` (shared/src/e2ee.rs), byte for byte, with WebCrypto alone,
 * so it runs in the page, in the media worker and under Node's test runner (the tests
 * check it against every case of shared/vectors.json's "e2ee" section).
 *
 * - Each side has an X25519 key pair per pairing and sends the public half through the
 *   relay (`KeyShare`, relayed as `PeerKey`).
 * - Both derive, with HKDF-SHA-256 (salt "duet-e2ee-v1" ‖ match id LE, info lower public
 *   key ‖ higher public key), 64 bytes: the first 32 are the sending key of the side whose
 *   public key sorts lower, the next 32 the other side's.
 * - Every frame and chat line is sealed with AES-256-GCM (128-bit tag). The nonce is the
 *   kind (audio 0, video 1, chat 2), seven zero bytes and the number (u32 BE); the
 *   associated data is the frame's part of the media header (`aadBytes`), so the relay can
 *   route but cannot move a frame to another pairing or change its capture time.
 * - `PairKeys.seal` refuses a number not higher than the last it sealed for that kind, so a
 *   (key, nonce) pair is never used twice.
 * - The safety code is four symbols from SHA-256("duet-safety-code-v1" ‖ lower key ‖
 *   higher key ‖ match id LE), for people to compare aloud.
 *
 * No DOM, no sockets: the engine (engine/pairing-crypto.js) holds a pairing's state.
 */

/** An X25519 public key, as `KeyShare` carries it. */
export const PUBLIC_KEY_BYTES = 32;
/** What sealing adds: the AES-GCM tag. */
export const TAG_BYTES = 16;
/** The associated data's length (see `aadBytes`). */
export const AAD_BYTES = 26;
/** The HKDF salt's prefix; the match id (u64 LE) follows. */
export const SALT_PREFIX = "duet-e2ee-v1";
/** What the safety code's hash starts with. */
export const SAFETY_CODE_DOMAIN = "duet-safety-code-v1";

/** The nonce's first byte, so audio, video and chat never share a nonce. */
export const KIND_AUDIO = 0;
export const KIND_VIDEO = 1;
export const KIND_CHAT = 2;

/** The symbols a safety code is written in: an emoji and the word to say for it (shared/src/e2ee.rs SAFETY_SYMBOLS). */
export const SAFETY_SYMBOLS = /** @type {const} */ ([
  ["🐶", "dog"], ["🐱", "cat"], ["🦊", "fox"], ["🐻", "bear"], ["🐼", "panda"], ["🐯", "tiger"], ["🦁", "lion"], ["🐮", "cow"],
  ["🐷", "pig"], ["🐸", "frog"], ["🐵", "monkey"], ["🐔", "chicken"], ["🐧", "penguin"], ["🐦", "bird"], ["🦉", "owl"], ["🐴", "horse"],
  ["🦄", "unicorn"], ["🐝", "bee"], ["🦋", "butterfly"], ["🐢", "turtle"], ["🐍", "snake"], ["🐙", "octopus"], ["🐬", "dolphin"], ["🐳", "whale"],
  ["🦈", "shark"], ["🦀", "crab"], ["🌵", "cactus"], ["🌲", "tree"], ["🌻", "sunflower"], ["🍄", "mushroom"], ["🌙", "moon"], ["⭐", "star"],
  ["🔥", "fire"], ["⚡", "lightning"], ["🌈", "rainbow"], ["🍎", "apple"], ["🍌", "banana"], ["🍇", "grapes"], ["🍓", "strawberry"], ["🍒", "cherries"],
  ["🍋", "lemon"], ["🍉", "watermelon"], ["🍍", "pineapple"], ["🥕", "carrot"], ["🌽", "corn"], ["🍕", "pizza"], ["🍩", "doughnut"], ["🎂", "cake"],
  ["☕", "coffee"], ["🎈", "balloon"], ["🎁", "gift"], ["🔑", "key"], ["🔔", "bell"], ["🎸", "guitar"], ["🎺", "trumpet"], ["🥁", "drum"],
  ["⚽", "football"], ["🏀", "basketball"], ["🚲", "bicycle"], ["🚗", "car"], ["🚀", "rocket"], ["⛵", "sailboat"], ["🏠", "house"], ["⏰", "clock"],
]);

/**
 * Why something could not be sealed or opened. `code`: "bad_peer_key" (a low-order point,
 * or our own key reflected: never an honest partner), "counter_reused" (a number already
 * sealed under this key), "unopened" (the tag did not match), "unavailable" (this browser
 * has no WebCrypto X25519).
 */
export class E2eeError extends Error {
  /** @param {"bad_peer_key" | "counter_reused" | "unopened" | "unavailable"} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "E2eeError";
    this.code = code;
  }
}

/**
 * What is sealed with a frame or line and not hidden: the frame's part of the media header
 * (for chat: the line's number, the rest zero).
 * @typedef {object} Aad
 * @property {bigint} matchId
 * @property {number} kind KIND_AUDIO, KIND_VIDEO or KIND_CHAT
 * @property {number} number the frame number (media) or line number (chat), also the nonce's counter
 * @property {boolean} keyframe
 * @property {bigint} captureUs
 * @property {number} refFrame
 */

/**
 * A chat line's associated data.
 * @param {bigint} matchId @param {number} number
 * @returns {Aad}
 */
export function chatAad(matchId, number) {
  return { matchId, kind: KIND_CHAT, number, keyframe: false, captureUs: 0n, refFrame: 0 };
}

/**
 * The 26 bytes of `aad`: match id (8, LE), kind (1), number (4, LE), keyframe (1),
 * capture time (8, LE), reference (4, LE), as `Aad::bytes` in shared/src/e2ee.rs.
 * @param {Aad} aad
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function aadBytes(aad) {
  const b = new Uint8Array(AAD_BYTES);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt.asUintN(64, aad.matchId), true);
  v.setUint8(8, aad.kind);
  v.setUint32(9, aad.number >>> 0, true);
  v.setUint8(13, aad.keyframe ? 1 : 0);
  v.setBigUint64(14, BigInt.asUintN(64, aad.captureUs), true);
  v.setUint32(22, aad.refFrame >>> 0, true);
  return b;
}

/**
 * The 96-bit nonce: the kind, seven zero bytes, the number (big-endian).
 * @param {number} kind @param {number} number
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function nonceBytes(kind, number) {
  const n = new Uint8Array(12);
  n[0] = kind;
  new DataView(n.buffer).setUint32(8, number >>> 0, false);
  return n;
}

/** WebCrypto, or an E2eeError that says what is missing. */
function subtle() {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new E2eeError("unavailable", "This page has no WebCrypto (it must be opened over https), so the call cannot be end-to-end encrypted.");
  return s;
}

/** UTF-8 bytes of a constant string. @param {string} s */
function utf8(s) {
  return new TextEncoder().encode(s);
}

/**
 * Bytewise comparison, as Rust compares `[u8; 32]`.
 * @param {Uint8Array} a @param {Uint8Array} b
 * @returns {number} < 0, 0 or > 0
 */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** @param {Uint8Array[]} parts @returns {Uint8Array<ArrayBuffer>} */
function concat(parts) {
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** @param {bigint} matchId @returns {Uint8Array<ArrayBuffer>} u64 LE */
function u64le(matchId) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, matchId), true);
  return b;
}

/** @param {Uint8Array} bytes @returns {string} unpadded base64url, for a JWK */
function base64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * One side's key pair for one pairing. The private half never leaves WebCrypto.
 * @typedef {object} KeyPair
 * @property {CryptoKey} privateKey
 * @property {Uint8Array<ArrayBuffer>} public the 32 bytes `KeyShare` sends
 */

/**
 * A fresh X25519 key pair (the private key is not extractable).
 * @returns {Promise<KeyPair>}
 * @throws {E2eeError} "unavailable" where the browser has no X25519
 */
export async function generateKeyPair() {
  const s = subtle();
  let pair;
  try {
    pair = /** @type {CryptoKeyPair} */ (await s.generateKey({ name: "X25519" }, false, ["deriveBits"]));
  } catch (e) {
    throw new E2eeError("unavailable", `This browser cannot make X25519 keys (${e instanceof Error ? e.message : e}), so the call cannot be end-to-end encrypted. Use a recent Chrome, Edge, Firefox or Safari.`);
  }
  const pub = new Uint8Array(await s.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, public: pub };
}

/**
 * A key pair from known bytes (the test vectors): WebCrypto takes an X25519 private key
 * only as JWK or PKCS #8, and a JWK carries both halves. The secret is clamped by X25519
 * itself, as `StaticSecret` does.
 * @param {Uint8Array} secret 32 bytes
 * @param {Uint8Array} pub its public key
 * @returns {Promise<KeyPair>}
 */
export async function importKeyPair(secret, pub) {
  const privateKey = await subtle().importKey("jwk", { kty: "OKP", crv: "X25519", d: base64url(secret), x: base64url(pub) }, { name: "X25519" }, false, ["deriveBits"]);
  return { privateKey, public: Uint8Array.from(pub) };
}

/**
 * Both directions' raw keys for pairing `matchId`, from this side's key pair and the
 * partner's public key (see the file's header). Exposed for the test vectors; the engine
 * uses `PairKeys.derive`, which keeps them inside WebCrypto.
 * @param {KeyPair} mine @param {Uint8Array} theirs @param {bigint} matchId
 * @returns {Promise<{send: Uint8Array<ArrayBuffer>, recv: Uint8Array<ArrayBuffer>}>}
 * @throws {E2eeError} "bad_peer_key"
 */
export async function deriveKeyBytes(mine, theirs, matchId) {
  if (theirs.length !== PUBLIC_KEY_BYTES) throw new E2eeError("bad_peer_key", `the partner's key is ${theirs.length} bytes, not ${PUBLIC_KEY_BYTES}`);
  if (compareBytes(theirs, mine.public) === 0) throw new E2eeError("bad_peer_key", "the partner's key is our own, reflected");
  const s = subtle();
  let shared;
  try {
    const peer = await s.importKey("raw", Uint8Array.from(theirs), { name: "X25519" }, false, []);
    shared = new Uint8Array(await s.deriveBits({ name: "X25519", public: peer }, mine.privateKey, 256));
  } catch (e) {
    // WebCrypto refuses a low-order point (an all-zero shared secret) itself.
    throw new E2eeError("bad_peer_key", `the partner's key is not usable (${e instanceof Error ? e.message : e})`);
  }
  if (shared.every((b) => b === 0)) throw new E2eeError("bad_peer_key", "the partner's key is a low-order point");
  const mineIsLower = compareBytes(mine.public, theirs) < 0;
  const [lo, hi] = mineIsLower ? [mine.public, theirs] : [theirs, mine.public];
  const ikm = await s.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
  shared.fill(0);
  const okm = new Uint8Array(await s.deriveBits({ name: "HKDF", hash: "SHA-256", salt: concat([utf8(SALT_PREFIX), u64le(matchId)]), info: concat([lo, hi]) }, ikm, 512));
  const first = okm.slice(0, 32);
  const second = okm.slice(32, 64);
  okm.fill(0);
  return mineIsLower ? { send: first, recv: second } : { send: second, recv: first };
}

/**
 * A safety code: four indices into SAFETY_SYMBOLS, with their emoji and words.
 * @typedef {{indices: number[], emoji: string, words: string}} SafetyCode
 */

/**
 * The safety code of two public keys (in either order) and a match id: the first three
 * bytes of SHA-256(domain ‖ lower key ‖ higher key ‖ match id LE), six bits per symbol,
 * most significant first.
 * @param {Uint8Array} a @param {Uint8Array} b @param {bigint} matchId
 * @returns {Promise<SafetyCode>}
 */
export async function safetyCode(a, b, matchId) {
  const [lo, hi] = compareBytes(a, b) <= 0 ? [a, b] : [b, a];
  const d = new Uint8Array(await subtle().digest("SHA-256", concat([utf8(SAFETY_CODE_DOMAIN), lo, hi, u64le(matchId)])));
  const bits = (d[0] << 16) | (d[1] << 8) | d[2];
  const indices = [(bits >> 18) & 63, (bits >> 12) & 63, (bits >> 6) & 63, bits & 63];
  return {
    indices,
    emoji: indices.map((i) => SAFETY_SYMBOLS[i][0]).join(""),
    words: indices.map((i) => SAFETY_SYMBOLS[i][1]).join(" "),
  };
}

/** The keys of one pairing, both directions, and the last number sealed per kind. */
export class PairKeys {
  /**
   * @param {CryptoKey} send @param {CryptoKey} recv
   * @param {Uint8Array} peerPublic @param {SafetyCode} code
   */
  constructor(send, recv, peerPublic, code) {
    this.send = send;
    this.recv = recv;
    /** The partner's public key, kept to tell a repeated `PeerKey` from a changed one. */
    this.peerPublic = Uint8Array.from(peerPublic);
    this.safetyCode = code;
    /** The last number sealed, per kind (-1: none yet). */
    this.sealed = [-1, -1, -1];
  }

  /**
   * Both directions' keys for pairing `matchId` (not extractable).
   * @param {KeyPair} mine @param {Uint8Array} theirs @param {bigint} matchId
   * @returns {Promise<PairKeys>}
   * @throws {E2eeError} "bad_peer_key"
   */
  static async derive(mine, theirs, matchId) {
    const raw = await deriveKeyBytes(mine, theirs, matchId);
    const s = subtle();
    const aes = { name: "AES-GCM", length: 256 };
    const [send, recv, code] = await Promise.all([
      s.importKey("raw", raw.send, aes, false, ["encrypt"]),
      s.importKey("raw", raw.recv, aes, false, ["decrypt"]),
      safetyCode(mine.public, theirs, matchId),
    ]);
    raw.send.fill(0);
    raw.recv.fill(0);
    return new PairKeys(send, recv, theirs, code);
  }

  /**
   * Seals `plaintext`: ciphertext then tag. The number is taken at once (before anything
   * is awaited), so calls seal in call order and a number is refused if it is not higher
   * than the last one sealed for its kind.
   * @param {Aad} aad @param {Uint8Array} plaintext
   * @returns {Promise<Uint8Array<ArrayBuffer>>}
   * @throws {E2eeError} "counter_reused"
   */
  seal(aad, plaintext) {
    const last = this.sealed[aad.kind];
    if (last === undefined) return Promise.reject(new E2eeError("unopened", `no such kind ${aad.kind}`));
    if (aad.number >>> 0 !== aad.number || aad.number <= last) {
      return Promise.reject(new E2eeError("counter_reused", `frame number ${aad.number} already used under this key`));
    }
    this.sealed[aad.kind] = aad.number;
    return subtle()
      .encrypt({ name: "AES-GCM", iv: nonceBytes(aad.kind, aad.number), additionalData: aadBytes(aad), tagLength: 128 }, this.send, asBuffer(plaintext))
      .then((b) => new Uint8Array(b));
  }

  /**
   * Opens what the partner sealed.
   * @param {Aad} aad @param {Uint8Array} sealed
   * @returns {Promise<Uint8Array<ArrayBuffer>>}
   * @throws {E2eeError} "unopened" when the tag does not match (changed in transit, another pairing's, or too short)
   */
  async open(aad, sealed) {
    if (sealed.length < TAG_BYTES || aad.kind < 0 || aad.kind > KIND_CHAT) throw new E2eeError("unopened", "the payload does not open");
    try {
      return new Uint8Array(await subtle().decrypt({ name: "AES-GCM", iv: nonceBytes(aad.kind, aad.number), additionalData: aadBytes(aad), tagLength: 128 }, this.recv, asBuffer(sealed)));
    } catch {
      throw new E2eeError("unopened", "the payload does not open");
    }
  }
}

/**
 * The bytes as WebCrypto's type wants them (a view of an `ArrayBuffer`, not a shared one).
 * @param {Uint8Array} bytes
 * @returns {Uint8Array<ArrayBuffer>}
 */
function asBuffer(bytes) {
  return bytes.buffer instanceof ArrayBuffer ? /** @type {Uint8Array<ArrayBuffer>} */ (bytes) : Uint8Array.from(bytes);
}

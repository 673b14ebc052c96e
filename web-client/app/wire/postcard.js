// @ts-check
/**
 * @file A small postcard codec: just the types duet-proto's messages use.
 *
 * postcard (the Rust crate the relay uses) writes unsigned integers wider than a byte as
 * LEB128 varints, `u8` and `bool` as one raw byte, strings and sequences as a varint
 * length followed by the items, `Option` as a 0/1 tag byte, enums as a varint variant
 * index followed by the variant's fields, structs as their fields in order and fixed
 * arrays as their items with no length. That is all this file knows; `protocol.js` says
 * which message is made of what.
 *
 * Every read is bounds-checked and throws `DecodeError` (and only that) on bad input, so
 * a caller can wrap a whole message decode in one `try`. `u64` values are `BigInt`s so
 * `u64::MAX` round-trips exactly; narrower integers are plain numbers.
 */

/** Thrown for any byte sequence that is not a valid encoding. */
export class DecodeError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "DecodeError";
  }
}

const MAX_U64 = (1n << 64n) - 1n;
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

/** Growable byte buffer that messages are encoded into. */
export class Writer {
  constructor() {
    /** @type {Uint8Array} */
    this.buf = new Uint8Array(64);
    this.len = 0;
  }

  /** @param {number} extra */
  reserve(extra) {
    if (this.len + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + extra) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
  }

  /** @param {number} byte */
  u8(byte) {
    if (!Number.isInteger(byte) || byte < 0 || byte > 0xff) throw new RangeError(`u8 out of range: ${byte}`);
    this.reserve(1);
    this.buf[this.len++] = byte;
  }

  /** @param {boolean} value */
  bool(value) {
    this.u8(value ? 1 : 0);
  }

  /**
   * An unsigned varint of at most `bits` bits.
   * @param {number | bigint} value
   * @param {16 | 32 | 64} bits
   */
  varint(value, bits) {
    let v = BigInt(value);
    const max = bits === 64 ? MAX_U64 : (1n << BigInt(bits)) - 1n;
    if (v < 0n || v > max) throw new RangeError(`u${bits} out of range: ${value}`);
    if (bits !== 64) {
      // The common case in plain numbers: no BigInt allocation per byte.
      let n = Number(v);
      do {
        let byte = n % 128;
        n = Math.floor(n / 128);
        if (n > 0) byte |= 0x80;
        this.u8(byte);
      } while (n > 0);
      return;
    }
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) byte |= 0x80;
      this.u8(byte);
    } while (v > 0n);
  }

  /** @param {number} v */
  u16(v) {
    this.varint(v, 16);
  }

  /** @param {number} v */
  u32(v) {
    this.varint(v, 32);
  }

  /** @param {bigint | number} v */
  u64(v) {
    this.varint(v, 64);
  }

  /** A length-prefixed UTF-8 string. @param {string} s */
  string(s) {
    this.bytes(utf8Encoder.encode(s));
  }

  /** A length-prefixed byte sequence. @param {Uint8Array} b */
  bytes(b) {
    this.u32(b.length);
    this.raw(b);
  }

  /** Bytes with no length prefix (fixed arrays). @param {Uint8Array} b */
  raw(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** @returns {Uint8Array} */
  finish() {
    return this.buf.slice(0, this.len);
  }
}

/** Cursor over received bytes. */
export class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  get remaining() {
    return this.bytes.length - this.pos;
  }

  /** @returns {number} */
  u8() {
    if (this.pos >= this.bytes.length) throw new DecodeError("unexpected end of input");
    return this.bytes[this.pos++];
  }

  /** @returns {boolean} */
  bool() {
    const b = this.u8();
    if (b > 1) throw new DecodeError(`invalid bool byte ${b}`);
    return b === 1;
  }

  /**
   * A varint of at most `bits` bits, refusing overlong and overflowing encodings as
   * postcard does.
   * @param {16 | 32 | 64} bits
   * @returns {bigint}
   */
  varintBig(bits) {
    const maxBytes = Math.ceil(bits / 7);
    let value = 0n;
    for (let i = 0; i < maxBytes; i++) {
      const byte = this.u8();
      value |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if ((byte & 0x80) === 0) {
        if (i === maxBytes - 1 && i > 0) {
          // The last byte may only carry the bits that are left.
          const leftover = bits - 7 * i;
          if (byte >> leftover !== 0) throw new DecodeError(`varint overflows u${bits}`);
        }
        return value;
      }
    }
    throw new DecodeError(`varint longer than u${bits} allows`);
  }

  /** @returns {number} */
  u16() {
    return Number(this.varintBig(16));
  }

  /** @returns {number} */
  u32() {
    return Number(this.varintBig(32));
  }

  /** @returns {bigint} */
  u64() {
    return this.varintBig(64);
  }

  /**
   * A length-prefixed byte sequence, refused if it claims more than is there (so a
   * hostile length never makes us allocate).
   * @returns {Uint8Array}
   */
  bytesPrefixed() {
    const len = this.u32();
    return this.raw(len);
  }

  /** @param {number} len @returns {Uint8Array} */
  raw(len) {
    if (len > this.remaining) throw new DecodeError(`length ${len} is past the end of input`);
    const out = this.bytes.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  /** @returns {string} */
  string() {
    const b = this.bytesPrefixed();
    try {
      return utf8Decoder.decode(b);
    } catch {
      throw new DecodeError("string is not valid UTF-8");
    }
  }

  /**
   * A sequence length, refused when it could not possibly fit in what is left (each item
   * takes at least `minItemBytes`).
   * @param {number} [minItemBytes]
   * @returns {number}
   */
  seqLen(minItemBytes = 1) {
    const n = this.u32();
    if (n * minItemBytes > this.remaining) throw new DecodeError(`sequence of ${n} items is past the end of input`);
    return n;
  }

  /** Throws unless every byte was consumed (trailing bytes mean a different message). */
  end() {
    if (this.pos !== this.bytes.length) throw new DecodeError(`${this.bytes.length - this.pos} trailing bytes`);
  }
}

/** @param {Uint8Array} bytes @returns {string} */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {string} hex @returns {Uint8Array<ArrayBuffer>} */
export function fromHex(hex) {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new DecodeError("not a hex string");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Bytes `s` takes in UTF-8 (what the protocol's limits count). @param {string} s */
export function utf8Length(s) {
  return utf8Encoder.encode(s).length;
}

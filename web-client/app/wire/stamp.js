// @ts-check
/**
 * @file A test picture whose every frame can be checked: the frame number and a checksum
 * drawn as black and white blocks along the top, and below them a grid of grey tiles whose
 * levels follow from the frame number. A receiver that reads the number back can tell
 * whether the whole picture is one the sender drew, or a broken one (a delta decoded on
 * the wrong reference shows tiles of another frame).
 *
 * Used by the browser tests' canvas camera and by the worker's optional inspection of
 * painted frames. Pure: pixels go in through a luma lookup of a box at fractional
 * coordinates, so any scaled copy of the picture can be read. Each box is the middle half
 * of a block or tile: the edges, where the codec's blocks and the scaler blur black into
 * white, are left out, so a 320×240 VP8 picture at a low bitrate still reads exactly.
 */

export const STAMP_BITS = 24;
/** Tile grid under the stamp row. */
const COLS = 8;
const ROWS = 5;
/** Grey levels the tiles use: far apart, so compression never moves one into the next. */
const LEVELS = [16, 96, 176, 240];
/** A sample further than this from its expected grey means the picture is not the sender's. */
export const TOLERANCE = 40;

/** @param {number} n 16-bit frame number @returns {number} 8-bit checksum */
function checksum(n) {
  return ((n * 151 + 89) ^ (n >> 8)) & 0xff;
}

/** Each tile changes once per this many frames, the tiles staggered (about one changes per frame): a picture a codec can follow at a low bitrate. */
const TILE_PERIOD = 40;

/** @param {number} n @param {number} tile @returns {number} grey level */
function tileLevel(n, tile) {
  const epoch = Math.floor((n + tile) / TILE_PERIOD);
  let h = (epoch * 2654435761 + tile * 40503) >>> 0;
  h ^= h >>> 13;
  return LEVELS[h & 3];
}

/**
 * Draws frame `n` (the picture for that number) into a 2D context.
 * @param {{fillStyle: any, fillRect(x: number, y: number, w: number, h: number): void}} ctx
 * @param {number} width
 * @param {number} height
 * @param {number} n
 */
export function drawStamp(ctx, width, height, n) {
  const value = ((n & 0xffff) << 8) | checksum(n & 0xffff);
  const bw = width / STAMP_BITS;
  const bh = height / 8;
  for (let i = 0; i < STAMP_BITS; i++) {
    ctx.fillStyle = (value >> (STAMP_BITS - 1 - i)) & 1 ? "#fff" : "#000";
    ctx.fillRect(Math.floor(i * bw), 0, Math.ceil(bw), Math.ceil(bh));
  }
  const tw = width / COLS;
  const th = (height - bh) / ROWS;
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLS; c++) {
      const g = tileLevel(n & 0xffff, r * COLS + c);
      ctx.fillStyle = `rgb(${g},${g},${g})`;
      ctx.fillRect(Math.floor(c * tw), Math.floor(bh + r * th), Math.ceil(tw), Math.ceil(th));
    }
  }
}

/**
 * Reads a picture back: its frame number if the stamp and every tile are as the sender
 * drew them, else null.
 * @param {(fx: number, fy: number, fw: number, fh: number) => number} luma mean luma (0..255) of the box centred at (fx, fy), fw × fh wide, all fractions of the picture (0..1)
 * @returns {number | null}
 */
export function readStamp(luma) {
  const bh = 1 / 8;
  let value = 0;
  for (let i = 0; i < STAMP_BITS; i++) value = (value << 1) | (luma((i + 0.5) / STAMP_BITS, bh / 2, 0.5 / STAMP_BITS, bh / 2) > 128 ? 1 : 0);
  const n = value >> 8;
  if ((value & 0xff) !== checksum(n)) return null;
  const th = (1 - bh) / ROWS;
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLS; c++) {
      if (Math.abs(luma((c + 0.5) / COLS, bh + (r + 0.5) * th, 0.5 / COLS, th / 2) - tileLevel(n, r * COLS + c)) > TOLERANCE) return null;
    }
  }
  return n;
}

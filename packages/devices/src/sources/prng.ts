// The pseudo-random generator nbdkit's random and sparse-random plugins use, so the
// same seed gives the same bytes: xoshiro256** 1.0 (Blackman and Vigna), seeded
// from one 64-bit value through splitmix64. Not for cryptography.
//
// 64-bit words are (hi, lo) pairs of uint32 (BigInt would be ~50× slower): products
// modulo 2^64 are built from 16-bit partial products, each exact in a double.

/** High 32 bits of the 64-bit product of two uint32. */
function mulHi(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const mid = ((a0 * b0) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  return (a1 * b1 + Math.floor(p01 / 0x10000) + Math.floor(p10 / 0x10000) + (mid >>> 16)) >>> 0;
}

/** Result registers of the 64-bit helpers (no allocation per call). */
let rh = 0;
let rl = 0;

/** (rh, rl) = (ah, al) × (bh, bl) mod 2^64. */
function mul64(ah: number, al: number, bh: number, bl: number): void {
  rh = (mulHi(al, bl) + Math.imul(al, bh) + Math.imul(ah, bl)) >>> 0;
  rl = Math.imul(al, bl) >>> 0;
}

/** One splitmix64 step over the state in `s[0..1]` (hi, lo); the output in (rh, rl). */
function splitmix(s: Uint32Array): void {
  // state += 0x9e3779b97f4a7c15
  const lo = s[1]! + 0x7f4a7c15;
  s[1] = lo >>> 0;
  s[0] = (s[0]! + 0x9e3779b9 + (lo > 0xffffffff ? 1 : 0)) >>> 0;
  let h = s[0]!;
  let l = s[1]!;
  // z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
  l = (l ^ ((l >>> 30) | (h << 2))) >>> 0;
  h = (h ^ (h >>> 30)) >>> 0;
  mul64(h, l, 0xbf58476d, 0x1ce4e5b9);
  // z = (z ^ (z >> 27)) * 0x94d049bb133111eb
  l = (rl ^ ((rl >>> 27) | (rh << 5))) >>> 0;
  h = (rh ^ (rh >>> 27)) >>> 0;
  mul64(h, l, 0x94d049bb, 0x133111eb);
  // z ^ (z >> 31)
  rl = (rl ^ ((rl >>> 31) | (rh << 1))) >>> 0;
  rh = (rh ^ (rh >>> 31)) >>> 0;
}

/** xoshiro256** state: four 64-bit words as (hi, lo) pairs. */
export class Xoshiro256 {
  private readonly s = new Uint32Array(8);
  private readonly seedState = new Uint32Array(2);
  /** High 32 bits of the last {@link next} result. */
  hi = 0;

  /** A generator seeded from `seed` (a safe integer ≥ 0), as nbdkit's xsrandom. */
  constructor(seed = 0) {
    this.reseed(seed);
  }

  /** Reseeds from `seed` (a safe integer ≥ 0), as nbdkit's xsrandom. */
  reseed(seed: number): void {
    const st = this.seedState;
    st[0] = Math.floor(seed / 0x100000000);
    st[1] = seed >>> 0;
    for (let i = 0; i < 8; i += 2) {
      splitmix(st);
      this.s[i] = rh;
      this.s[i + 1] = rl;
    }
  }

  /** The next 64 random bits: returns the low 32, leaves the high 32 in `hi`. */
  next(): number {
    const s = this.s;
    const h0 = s[0]!;
    const l0 = s[1]!;
    const h1 = s[2]!;
    const l1 = s[3]!;
    const h2 = s[4]!;
    const l2 = s[5]!;
    const h3 = s[6]!;
    const l3 = s[7]!;
    // result = rotl(s1 * 5, 7) * 9
    mul64(h1, l1, 0, 5);
    const xh = ((rh << 7) | (rl >>> 25)) >>> 0;
    const xl = ((rl << 7) | (rh >>> 25)) >>> 0;
    mul64(xh, xl, 0, 9);
    const outH = rh;
    const outL = rl;
    // t = s1 << 17
    const th = ((h1 << 17) | (l1 >>> 15)) >>> 0;
    const tl = (l1 << 17) >>> 0;
    const nh2 = h2 ^ h0;
    const nl2 = l2 ^ l0;
    const nh3 = h3 ^ h1;
    const nl3 = l3 ^ l1;
    s[2] = h1 ^ nh2;
    s[3] = l1 ^ nl2;
    s[0] = h0 ^ nh3;
    s[1] = l0 ^ nl3;
    s[4] = nh2 ^ th;
    s[5] = nl2 ^ tl;
    // s3 = rotl(s3, 45): swap the halves, then rotate by 13.
    s[6] = (nl3 << 13) | (nh3 >>> 19);
    s[7] = (nh3 << 13) | (nl3 >>> 19);
    this.hi = outH;
    return outL;
  }

  /** The next 64 random bits as a double, rounded as C converts a uint64_t. */
  nextDouble(): number {
    const lo = this.next();
    return this.hi * 0x100000000 + lo;
  }
}

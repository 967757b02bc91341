/** Element types a Tensor can hold. f16 is storage only: compute accumulates in f32. */
export type DType = 'f32' | 'f16' | 'i32' | 'u32';

export const DTYPES: readonly DType[] = ['f32', 'f16', 'i32', 'u32'];

export const BYTES_PER_ELEMENT: Readonly<Record<DType, number>> = { f32: 4, f16: 2, i32: 4, u32: 4 };

/** What `Tensor.read()` returns: f16 widens to f32. */
export type ReadArray<D extends DType = DType> = D extends 'i32' ? Int32Array : D extends 'u32' ? Uint32Array : Float32Array;

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

/** Number of elements of a shape; [] is a scalar (1 element). */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

let f16Table: Float32Array | undefined;

/**
 * f16 bit patterns to f32 values (exact: every f16 is an f32), through a table of all 65 536
 * patterns made on first use. The Float16Array polyfill reads element by element through a Proxy,
 * about 30x slower: it dominated reading back f16 outputs (0.8 s for an OWLv2 [3600, 512]).
 */
export function f16BitsToF32(src: Uint16Array): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >>> 10) & 0x1f;
      const mant = h & 0x3ff;
      if (exp === 0) f16Table[h] = sign * mant * 2 ** -24;
      else if (exp === 0x1f) f16Table[h] = mant ? NaN : sign * Infinity;
      else f16Table[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
    }
  }
  const table = f16Table;
  const dst = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) dst[i] = table[src[i]!]!;
  return dst;
}

/**
 * f32 values to f16 bit patterns, IEEE round-to-nearest-even (NaN stays NaN, overflow → ±Inf,
 * subnormals exact). Bit arithmetic over the whole array: the Float16Array polyfill converts about
 * 10x slower, which dominated loading f16 weights. f32 inputs only: converting a double through f32
 * first could round twice.
 */
export function f32ToF16Bits(src: Float32Array, dst: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      dst[i] = sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
      continue;
    }
    const e = exp - 112; // rebias 127 → 15
    if (e >= 0x1f) {
      dst[i] = sign | 0x7c00;
    } else if (e <= 0) {
      if (e < -10) {
        dst[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let half = mant >>> shift;
      const rest = mant & ((1 << shift) - 1);
      const halfway = 1 << (shift - 1);
      if (rest > halfway || (rest === halfway && half & 1)) half++;
      dst[i] = sign | half;
    } else {
      let half = (e << 10) | (mant >>> 13);
      const rest = mant & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++; // a carry into the exponent is right, up to Inf
      dst[i] = sign | half;
    }
  }
}

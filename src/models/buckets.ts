// A plan serves one set of shapes, so models run counts (images, text rows, queries, boxes) padded
// up to a power of two: a handful of plans serve every count, and the padding never reaches the
// results (rows are computed independently and trimmed; padded queries are masked).
import type { ReadArray } from '../dtype.js';

/** The power of two a count of `n` runs as (at least 1). */
export const bucket = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** `data` of `rows` equal rows, zero-padded to `padded` rows (itself when no padding is needed). */
export function padRows<T extends Float32Array | Int32Array>(data: T, rows: number, padded: number): T {
  if (rows === padded) return data;
  const out = new (data.constructor as new (length: number) => T)((data.length / rows) * padded);
  out.set(data);
  return out;
}

/** The first `rows` of `data`'s `padded` equal rows. */
export function firstRows<T extends ReadArray>(data: T, rows: number, padded: number): T {
  return (rows === padded ? data : data.slice(0, (data.length / padded) * rows)) as T;
}

/** Rows of `cols` values (`data` holds `rows` of them) zero-padded to `padded` values each. */
export function padColumns<T extends Float32Array | Int32Array>(data: T, rows: number, cols: number, padded: number): T {
  if (cols === padded) return data;
  const out = new (data.constructor as new (length: number) => T)(rows * padded);
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * cols, (r + 1) * cols), r * padded);
  return out;
}

/** The first `cols` values of each of the first `rows` rows of `padded` values. */
export function firstColumns<T extends Float32Array | Int32Array>(data: T, rows: number, padded: number, cols: number): T {
  if (cols === padded) return data.length === rows * cols ? data : (data.slice(0, rows * cols) as T);
  const out = new (data.constructor as new (length: number) => T)(rows * cols);
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * padded, r * padded + cols), r * cols);
  return out;
}

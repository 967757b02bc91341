// The permutohedral lattice of Adams, Baek and Davis (2010), built on the CPU exactly as
// Krähenbühl's densecrf (permutohedral.cpp, the SSE build pydensecrf runs on x86-64) builds it:
// the same f32 arithmetic, rounding and vertex keys, so filtering through it gives densecrf's
// numbers. The mean-field kernel (meanField.ts) splats, blurs and slices through it on the GPU.
import { check } from '../gpu/errors.js';

const f = Math.fround;

/**
 * A lattice over N points with d-dimensional features. Vertex ids follow densecrf's order of
 * creation; -1 stands for a missing neighbour (densecrf's hash-table miss, a zero value).
 */
export interface PermutohedralLattice {
  /** Feature dimensions d; every point touches d + 1 vertices. */
  readonly dims: number;
  readonly points: number;
  readonly vertices: number;
  /** [N, d+1] i32: the vertices of each point's simplex. */
  readonly offsets: Int32Array;
  /** [N, d+1] f32: each point's barycentric weights on them (densecrf's splat and slice weights). */
  readonly weights: Float32Array;
  /** [d+1, M, 2] i32: per blur axis, each vertex's two neighbours along it, or -1. */
  readonly neighbors: Int32Array;
  /** [M+1] u32: vertex v is splatted from entries [splatStart[v], splatStart[v+1]). */
  readonly splatStart: Uint32Array;
  /**
   * [N·(d+1)] u32: the point of each entry, grouped by vertex and ascending within a vertex, so a
   * gather sums in densecrf's scatter order.
   */
  readonly splatPoints: Uint32Array;
  /** [N·(d+1)] f32: each entry's barycentric weight. */
  readonly splatWeights: Float32Array;
}

/** Open-addressing table of integer keys of length d (densecrf's HashTable, with our own hash). */
class KeyTable {
  private keys: Int32Array;
  private table: Int32Array;
  private mask: number;
  size = 0;

  constructor(
    private readonly d: number,
    expected: number,
  ) {
    const capacity = 2 ** Math.ceil(Math.log2(Math.max(16, 2 * expected)));
    this.table = new Int32Array(capacity).fill(-1);
    this.mask = capacity - 1;
    this.keys = new Int32Array((capacity / 2) * d);
  }

  private hash(k: Int32Array, at: number): number {
    let r = 0;
    for (let i = 0; i < this.d; i++) r = Math.imul(r + k[at + i]!, 1664525);
    return (r ^ (r >>> 15)) & this.mask;
  }

  private same(e: number, k: Int32Array, at: number): boolean {
    for (let i = 0; i < this.d; i++) if (this.keys[e * this.d + i] !== k[at + i]) return false;
    return true;
  }

  /** The id of key k[at .. at+d), created when `create`; -1 when absent. */
  find(k: Int32Array, at: number, create: boolean): number {
    if (create && 2 * (this.size + 1) > this.table.length) this.grow();
    for (let h = this.hash(k, at); ; h = (h + 1) & this.mask) {
      const e = this.table[h]!;
      if (e < 0) {
        if (!create) return -1;
        this.keys.set(k.subarray(at, at + this.d), this.size * this.d);
        this.table[h] = this.size;
        return this.size++;
      }
      if (this.same(e, k, at)) return e;
    }
  }

  key(e: number): Int32Array {
    return this.keys.subarray(e * this.d, (e + 1) * this.d);
  }

  private grow(): void {
    const old = this.table;
    const keys = new Int32Array(old.length * this.d);
    keys.set(this.keys);
    this.keys = keys;
    this.table = new Int32Array(old.length * 2).fill(-1);
    this.mask = this.table.length - 1;
    for (let e = 0; e < this.size; e++) {
      let h = this.hash(this.keys, e * this.d);
      while (this.table[h]! >= 0) h = (h + 1) & this.mask;
      this.table[h] = e;
    }
  }
}

/** Round half to even, as SSE's cvtps2dq under the default rounding mode. */
function roundEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The lattice of N points with features [N, d] (point-major, already divided by their standard
 * deviations: the filter is exp(-|f_i - f_j|² / 2)). densecrf's Permutohedral::init: elevate onto
 * the d-plane, find the enclosing simplex by rounding and ranking, barycentric weights, then the
 * blur neighbours of every vertex along the d+1 lattice axes.
 */
export function buildPermutohedralLattice(features: ArrayLike<number>, dims: number): PermutohedralLattice {
  const d = dims;
  check(Number.isInteger(d) && d >= 1, 'permutohedral', `dims must be an integer >= 1, got ${dims}`);
  check(features.length % d === 0, 'permutohedral', `features hold ${features.length} values, not a multiple of dims ${d}`);
  const n = features.length / d;
  const d1 = d + 1;
  const invStd = f(Math.sqrt(2 / 3) * d1);
  const scale = Array.from({ length: d }, (_, i) => f((1 / Math.sqrt((i + 2) * (i + 1))) * invStd));
  const down = f(1 / d1);
  // canonical[r][j]: the offset of the r-th vertex of the canonical simplex along the coordinate ranked j.
  const canonical = Array.from({ length: d1 }, (_, r) => Array.from({ length: d1 }, (_, j) => (j <= d - r ? r : r - d1)));

  const table = new KeyTable(d, n);
  const offsets = new Int32Array(n * d1);
  const weights = new Float32Array(n * d1);
  const elevated = new Float64Array(d1);
  const rem0 = new Float64Array(d1);
  const rank = new Int32Array(d1);
  const bary = new Float64Array(d + 2);
  const key = new Int32Array(d);
  for (let k = 0; k < n; k++) {
    // Elevate (y = E p): sm accumulates the scaled coordinates from the last one down.
    let sm = 0;
    for (let j = d; j > 0; j--) {
      const cf = f(f(features[k * d + j - 1]!) * scale[j - 1]!);
      elevated[j] = f(sm - f(j * cf));
      sm = f(sm + cf);
    }
    elevated[0] = sm;
    // The nearest remainder-0 point, and how far off the plane its coordinates sum.
    let sum = 0;
    for (let i = 0; i <= d; i++) {
      const v = roundEven(f(down * elevated[i]!));
      rem0[i] = f(v * d1);
      sum += v;
    }
    // Rank of each coordinate's residual (the simplex), then back onto the plane.
    rank.fill(0);
    for (let i = 0; i < d; i++) {
      const di = f(elevated[i]! - rem0[i]!);
      for (let j = i + 1; j <= d; j++) {
        if (di < f(elevated[j]! - rem0[j]!)) rank[i]!++;
        else rank[j]!++;
      }
    }
    for (let i = 0; i <= d; i++) {
      rank[i]! += sum;
      if (rank[i]! < 0) {
        rank[i]! += d1;
        rem0[i]! += d1;
      } else if (rank[i]! >= d1) {
        rank[i]! -= d1;
        rem0[i]! -= d1;
      }
    }
    // Barycentric coordinates (p. 10 of Adams et al.), in f32 like densecrf.
    bary.fill(0);
    for (let i = 0; i <= d; i++) {
      const v = f(f(elevated[i]! - rem0[i]!) * down);
      const p = d - rank[i]!;
      bary[p] = f(bary[p]! + v);
      bary[p + 1] = f(bary[p + 1]! - v);
    }
    bary[0] = f(bary[0]! + f(1 + bary[d + 1]!));
    for (let r = 0; r <= d; r++) {
      for (let i = 0; i < d; i++) key[i] = rem0[i]! + canonical[r]![rank[i]!]!;
      offsets[k * d1 + r] = table.find(key, 0, true);
      weights[k * d1 + r] = bary[r]!;
    }
  }

  const m = table.size;
  const neighbors = new Int32Array(d1 * m * 2);
  const n1 = new Int32Array(d);
  const n2 = new Int32Array(d);
  for (let j = 0; j <= d; j++) {
    for (let v = 0; v < m; v++) {
      const kv = table.key(v);
      for (let i = 0; i < d; i++) {
        n1[i] = kv[i]! - 1;
        n2[i] = kv[i]! + 1;
      }
      if (j < d) {
        n1[j] = kv[j]! + d;
        n2[j] = kv[j]! - d;
      }
      neighbors[(j * m + v) * 2] = table.find(n1, 0, false);
      neighbors[(j * m + v) * 2 + 1] = table.find(n2, 0, false);
    }
  }

  // Splat by gather: the entries of each vertex in ascending flat order (a counting sort).
  const splatStart = new Uint32Array(m + 1);
  for (let e = 0; e < n * d1; e++) splatStart[offsets[e]! + 1]!++;
  for (let v = 0; v < m; v++) splatStart[v + 1]! += splatStart[v]!;
  const fill = splatStart.slice(0, m);
  const splatPoints = new Uint32Array(n * d1);
  const splatWeights = new Float32Array(n * d1);
  for (let e = 0; e < n * d1; e++) {
    const at = fill[offsets[e]!]!++;
    splatPoints[at] = Math.floor(e / d1);
    splatWeights[at] = weights[e]!;
  }

  return { dims: d, points: n, vertices: m, offsets, weights, neighbors, splatStart, splatPoints, splatWeights };
}

/** densecrf's slicing constant: the lattice's blur has this overall gain. */
export const latticeAlpha = (dims: number): number => f(1 / (1 + 2 ** -dims));

// ---- CPU reference (tests and the lattice's normaliser), written for clarity ----

/**
 * densecrf's Permutohedral::compute on values [N, C] (point-major): splat with the barycentric
 * weights, blur along axes 0..d with [1/2, 1, 1/2], slice with the weights times alpha. f32
 * arithmetic in densecrf's order.
 */
export function permutohedralFilterReference(lattice: PermutohedralLattice, values: ArrayLike<number>, channels: number): Float32Array {
  const { dims: d, points: n, vertices: m, offsets, weights, neighbors } = lattice;
  const d1 = d + 1;
  let grid = new Float32Array(m * channels);
  let next = new Float32Array(m * channels);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d1; j++) {
      const o = offsets[i * d1 + j]!;
      const w = weights[i * d1 + j]!;
      for (let c = 0; c < channels; c++) grid[o * channels + c] = f(grid[o * channels + c]! + f(w * values[i * channels + c]!));
    }
  }
  for (let j = 0; j < d1; j++) {
    for (let v = 0; v < m; v++) {
      const a = neighbors[(j * m + v) * 2]!;
      const b = neighbors[(j * m + v) * 2 + 1]!;
      for (let c = 0; c < channels; c++) {
        const va = a < 0 ? 0 : grid[a * channels + c]!;
        const vb = b < 0 ? 0 : grid[b * channels + c]!;
        next[v * channels + c] = f(grid[v * channels + c]! + f(0.5 * f(va + vb)));
      }
    }
    [grid, next] = [next, grid];
  }
  const alpha = latticeAlpha(d);
  const out = new Float32Array(n * channels);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d1; j++) {
      const o = offsets[i * d1 + j]!;
      const w = weights[i * d1 + j]!;
      for (let c = 0; c < channels; c++) out[i * channels + c] = f(out[i * channels + c]! + f(f(w * grid[o * channels + c]!) * alpha));
    }
  }
  return out;
}

/**
 * densecrf's NORMALIZE_SYMMETRIC factors: 1 / sqrt(K·1 + 1e-20) per point, with K the lattice's
 * filter, so that a filtered message is norm ⊙ K (norm ⊙ Q), as DenseKernel::initLattice computes.
 */
export function latticeNormalizer(lattice: PermutohedralLattice): Float32Array {
  const ones = new Float32Array(lattice.points).fill(1);
  const sums = permutohedralFilterReference(lattice, ones, 1);
  return sums.map((s) => 1 / Math.sqrt(s + 1e-20));
}

import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { shapeString } from '../dtype.js';
import { Tensor } from '../tensor.js';
import { grid1d, uniforms, type Dispatch, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import { latticeAlpha, latticeNormalizer, permutohedralFilterReference, type PermutohedralLattice } from './permutohedral.js';
import meanFieldWgsl from '../../shaders/meanField.wgsl';

export interface MeanFieldOptions {
  /** Mean-field iterations (densecrf's n_iterations); 0 returns softmax(-unary). */
  iterations: number;
  /** The Potts weight of each pairwise term, one per lattice (pydensecrf's `compat`). */
  weights: readonly number[];
}

const NAME = 'meanField';
const WG = 64;
/** Tensors per pairwise term, in the order `latticeTensors` uploads them. */
export const LATTICE_TENSORS = ['offsets', 'weights', 'neighbors', 'pieceStart', 'vertexPieces', 'splatPoints', 'splatWeights', 'norm'] as const;

/**
 * Mean-field inference of a dense CRF as densecrf's DenseCRF::inference with Potts terms and
 * symmetric normalisation. Inputs: unary energies [N, L] f32 (-log p), then per pairwise term the
 * eight tensors of `latticeTensors` (its permutohedral lattice and normaliser). Output: the marginals
 * Q [N, L] f32. Dispatches: softmax(-unary), then per iteration and term a splat (a gather per
 * piece of a vertex's entries, then per vertex when some vertex has several pieces), d+1 blurs and a slice that adds the term's message to the energy (the last term's
 * slice also takes the softmax). Labels move in chunks of four (vec4): scratch holds Q and the
 * energy as [N, ⌈L/4⌉, 4] and two [M, ⌈L/4⌉, 4] lattice value buffers.
 */
export const meanFieldKernel: Kernel<MeanFieldOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && typeof o === 'object', NAME, 'options { iterations, weights } are required');
    check(Number.isInteger(o.iterations) && o.iterations >= 0, NAME, `iterations must be an integer >= 0, got ${o.iterations}`);
    check(Array.isArray(o.weights) && o.weights.every((w) => Number.isFinite(w)), NAME, `weights must be finite numbers, got ${String(o.weights)}`);
    const per = LATTICE_TENSORS.length;
    check(inputs.length === 1 + per * o.weights.length, NAME, () => `expected unary and ${per} lattice tensors for each of ${o.weights.length} terms (${1 + per * o.weights.length} inputs), got ${inputs.length}`);
    const unary = inputs[0]!;
    check(unary.dtype === 'f32' && unary.shape.length === 2, NAME, () => `unary must be f32 [N, L], got ${unary.dtype} ${shapeString(unary.shape)}`);
    const [n, labels] = unary.shape as [number, number];
    check(labels >= 1, NAME, 'unary must have at least one label');
    for (let t = 0; t < o.weights.length; t++) {
      const [offsets, weights, neighbors, pieceStart, vertexPieces, points, pointWeights, norm] = inputs.slice(1 + per * t, 1 + per * (t + 1)) as TensorInfo[];
      const what = (name: string) => `term ${t} ${name}`;
      const expect = (x: TensorInfo, name: string, dtype: string, shape: number[]) =>
        check(x.dtype === dtype && shapeString(x.shape) === shapeString(shape), NAME, () => `${what(name)} must be ${dtype} ${shapeString(shape)}, got ${x.dtype} ${shapeString(x.shape)}`);
      check(offsets!.shape.length === 2 && offsets!.shape[0] === n, NAME, () => `${what('offsets')} must be [${n}, d+1] like unary's points, got ${shapeString(offsets!.shape)}`);
      const corners = offsets!.shape[1]!;
      check(neighbors!.shape.length === 3 && neighbors!.shape[0] === corners, NAME, () => `${what('neighbors')} must be [${corners}, M, 2], got ${shapeString(neighbors!.shape)}`);
      const m = neighbors!.shape[1]!;
      expect(offsets!, 'offsets', 'i32', [n, corners]);
      expect(weights!, 'weights', 'f32', [n, corners]);
      expect(neighbors!, 'neighbors', 'i32', [corners, m, 2]);
      check(pieceStart!.dtype === 'u32' && pieceStart!.shape.length === 1 && pieceStart!.shape[0]! >= m + 1, NAME, () => `${what('pieceStart')} must be u32 [P+1] with P >= ${m} pieces, got ${pieceStart!.dtype} ${shapeString(pieceStart!.shape)}`);
      expect(vertexPieces!, 'vertexPieces', 'u32', [m + 1]);
      expect(points!, 'splatPoints', 'u32', [n * corners]);
      expect(pointWeights!, 'splatWeights', 'f32', [n * corners]);
      expect(norm!, 'norm', 'f32', [n]);
    }
    return [{ shape: [n, labels], dtype: 'f32' }];
  },
  plan(gpu, inputs, outputs, o) {
    const [n, labels] = inputs[0]!.shape as [number, number];
    const chunks = Math.ceil(labels / 4);
    const per = LATTICE_TENSORS.length;
    const terms = o.weights.map((weight, t) => {
      const at = 1 + per * t;
      return { weight, at, corners: inputs[at]!.shape[1]!, vertices: inputs[at + 2]!.shape[1]!, pieces: inputs[at + 3]!.shape[0]! - 1 };
    });
    const maxVertices = Math.max(1, ...terms.map((t) => t.vertices));
    const out = inputs.length;
    const [q, energy, valuesA, valuesB, pieceSums] = [out + 1, out + 2, out + 3, out + 4, out + 5];
    const maxPieces = Math.max(1, ...terms.filter((t) => t.pieces > t.vertices).map((t) => t.pieces));
    const program = (entryPoint: string, bindings: Dispatch['program']['bindings']) => ({ name: `${NAME}.${entryPoint}`, key: 'f32', code: meanFieldWgsl, entryPoint, constants: { WG }, bindings });
    const params = (corners: number, vertices: number, pieces = 0, axis = 0, first = 0, last = 0, output = 0, weight = 0, alpha = 0) =>
      uniforms(n, labels, chunks, corners, vertices, pieces, axis, first, last, output, { f32: weight }, { f32: alpha });
    const R = 'read' as const;
    const W = 'write' as const;
    const dispatches: Dispatch[] = [{ program: program('init', [R, W, W]), tensors: [0, q, out], uniforms: params(1, 0), workgroups: grid1d(gpu, n, WG) }];
    let flops = 3 * n * labels;
    for (let it = 0; it < o.iterations; it++) {
      terms.forEach((t, k) => {
        const [offsets, weights, neighbors, pieceStart, vertexPieces, points, pointWeights, norm] = LATTICE_TENSORS.map((_, i) => t.at + i) as number[] as [number, number, number, number, number, number, number, number];
        const split = t.pieces > t.vertices;
        const sums = split ? pieceSums : valuesA;
        dispatches.push({ program: program('splat', [R, R, R, R, R, W]), tensors: [pieceStart, points, pointWeights, norm, q, sums], uniforms: params(t.corners, t.vertices, t.pieces), workgroups: grid1d(gpu, t.pieces, WG) });
        if (split) {
          dispatches.push({ program: program('gather', [R, R, W]), tensors: [vertexPieces, pieceSums, valuesA], uniforms: params(t.corners, t.vertices, t.pieces), workgroups: grid1d(gpu, t.vertices, WG) });
        }
        let src = valuesA;
        let dst = valuesB;
        for (let axis = 0; axis < t.corners; axis++) {
          dispatches.push({ program: program('blur', [R, R, W]), tensors: [neighbors, src, dst], uniforms: params(t.corners, t.vertices, t.pieces, axis), workgroups: grid1d(gpu, t.vertices, WG) });
          [src, dst] = [dst, src];
        }
        const last = k === terms.length - 1;
        dispatches.push({
          program: program('slice', [R, R, R, R, R, W, W, W]),
          tensors: [offsets, weights, src, norm, 0, energy, q, out],
          uniforms: params(t.corners, t.vertices, t.pieces, 0, k === 0 ? 1 : 0, last ? 1 : 0, last && it === o.iterations - 1 ? 1 : 0, t.weight, latticeAlpha(t.corners - 1)),
          workgroups: grid1d(gpu, n, WG),
        });
        // splat 3 per entry and label, blur 3 per vertex, axis and label, slice 3 per corner and label + 3
        flops += labels * (6 * n * t.corners + 3 * t.corners * t.vertices + 3 * n);
      });
    }
    const chunked = (rows: number): TensorInfo => ({ shape: [rows, chunks, 4], dtype: 'f32' });
    return {
      dispatches,
      scratch: [chunked(n), chunked(n), chunked(maxVertices), chunked(maxVertices), chunked(maxPieces)],
      flops,
      // Nominal: per term and iteration, Q read per entry, lattice values written and read per blur, sliced per corner.
      bytes: 4 * (flops / 3),
    };
  },
};

/**
 * The splat's pieces: each vertex's entries cut into runs of at most max(32, ⌈√(most entries of a
 * vertex)⌉), so that neither pass of the splat loops over more than about √N entries. pieceStart
 * [P+1] bounds the pieces' entries, vertexPieces [M+1] each vertex's pieces; one piece per vertex
 * (P = M) where every vertex fits in one.
 */
export function splatPieces(splatStart: Uint32Array): { pieceStart: Uint32Array; vertexPieces: Uint32Array } {
  const m = splatStart.length - 1;
  let most = 0;
  for (let v = 0; v < m; v++) most = Math.max(most, splatStart[v + 1]! - splatStart[v]!);
  const size = Math.max(32, Math.ceil(Math.sqrt(most)));
  const vertexPieces = new Uint32Array(m + 1);
  for (let v = 0; v < m; v++) vertexPieces[v + 1] = vertexPieces[v]! + Math.max(1, Math.ceil((splatStart[v + 1]! - splatStart[v]!) / size));
  const pieceStart = new Uint32Array(vertexPieces[m]! + 1);
  for (let v = 0; v < m; v++) {
    for (let k = vertexPieces[v]!, e = splatStart[v]!; k < vertexPieces[v + 1]!; k++, e += size) pieceStart[k] = e;
  }
  pieceStart[vertexPieces[m]!] = splatStart[m]!;
  return { pieceStart, vertexPieces };
}

/** A lattice's arrays in meanFieldKernel's input order (LATTICE_TENSORS), its symmetric normaliser computed here (cheap: one filter of ones). */
export function latticeArrays(lattice: PermutohedralLattice): { data: ArrayLike<number>; shape: number[]; dtype: 'f32' | 'i32' | 'u32' }[] {
  const { points: n, dims: d, vertices: m } = lattice;
  const { pieceStart, vertexPieces } = splatPieces(lattice.splatStart);
  return [
    { data: lattice.offsets, shape: [n, d + 1], dtype: 'i32' },
    { data: lattice.weights, shape: [n, d + 1], dtype: 'f32' },
    { data: lattice.neighbors, shape: [d + 1, m, 2], dtype: 'i32' },
    { data: pieceStart, shape: [pieceStart.length], dtype: 'u32' },
    { data: vertexPieces, shape: [m + 1], dtype: 'u32' },
    { data: lattice.splatPoints, shape: [n * (d + 1)], dtype: 'u32' },
    { data: lattice.splatWeights, shape: [n * (d + 1)], dtype: 'f32' },
    { data: latticeNormalizer(lattice), shape: [n], dtype: 'f32' },
  ];
}

/** A lattice's tensors in meanFieldKernel's input order. */
export function latticeTensors(gpu: Gpu, lattice: PermutohedralLattice): Tensor[] {
  const tensors: Tensor[] = [];
  try {
    for (const a of latticeArrays(lattice)) tensors.push(Tensor.from(gpu, a.data as Float32Array, a.shape, a.dtype));
    return tensors;
  } catch (err) {
    for (const t of tensors) t.dispose();
    throw err;
  }
}

/** A pairwise term: its lattice tensors (`latticeTensors`) and Potts weight. */
export interface MeanFieldTerm {
  readonly tensors: readonly Tensor[];
  readonly weight: number;
}

/** Marginals Q [N, L] of mean-field inference from unary energies [N, L] and pairwise terms (see meanFieldKernel). */
export async function meanField(gpu: Gpu, unary: Tensor, terms: readonly MeanFieldTerm[], iterations: number): Promise<Tensor> {
  const [q] = await runKernel(gpu, meanFieldKernel, [unary, ...terms.flatMap((t) => t.tensors)], { iterations, weights: terms.map((t) => t.weight) });
  return q!;
}

// ---- CPU references (tests only), written for clarity ----

const f = Math.fround;

/** densecrf's expAndNormalize of one point's energies, in f32. */
function softmaxInto(q: Float32Array, energy: ArrayLike<number>, base: number, labels: number): void {
  let m = -Infinity;
  for (let l = 0; l < labels; l++) m = Math.max(m, energy[base + l]!);
  let s = 0;
  for (let l = 0; l < labels; l++) s = f(s + f(Math.exp(energy[base + l]! - m)));
  for (let l = 0; l < labels; l++) q[base + l] = f(f(Math.exp(energy[base + l]! - m)) / s);
}

/**
 * densecrf's DenseCRF::inference with Potts terms (compat = weight) and NORMALIZE_SYMMETRIC
 * Gaussian kernels filtered through permutohedral lattices: Q = softmax(-U), then per iteration
 * E = -U + Σ_t w_t · norm_t ⊙ K_t(norm_t ⊙ Q), Q = softmax(E). unary [N, L]; returns Q [N, L].
 */
export function meanFieldReference(unary: ArrayLike<number>, labels: number, terms: readonly { lattice: PermutohedralLattice; weight: number }[], iterations: number): Float32Array {
  const n = unary.length / labels;
  const q = new Float32Array(n * labels);
  const minus = Float32Array.from(unary, (u) => -u);
  for (let i = 0; i < n; i++) softmaxInto(q, minus, i * labels, labels);
  const norms = terms.map((t) => latticeNormalizer(t.lattice));
  for (let it = 0; it < iterations; it++) {
    const energy = Float32Array.from(minus);
    terms.forEach((t, k) => {
      const norm = norms[k]!;
      const scaled = q.map((v, j) => f(v * norm[Math.floor(j / labels)]!));
      const filtered = permutohedralFilterReference(t.lattice, scaled, labels);
      for (let j = 0; j < energy.length; j++) energy[j] = f(energy[j]! + f(t.weight * f(filtered[j]! * norm[Math.floor(j / labels)]!)));
    });
    for (let i = 0; i < n; i++) softmaxInto(q, energy, i * labels, labels);
  }
  return q;
}

/**
 * The same inference with exact Gaussian kernels, O(N²) per term and iteration, in f64: for
 * features f [N, d] (divided by their standard deviations), K_ij = exp(-|f_i - f_j|² / 2) with
 * K_ii = 1 as the lattice includes each point itself, normalised symmetrically by D = K·1. What the
 * permutohedral lattice approximates.
 */
export function meanFieldBruteForceReference(unary: ArrayLike<number>, labels: number, terms: readonly { features: ArrayLike<number>; dims: number; weight: number }[], iterations: number): Float64Array {
  const n = unary.length / labels;
  const kernels = terms.map(({ features, dims }) => {
    const k = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let c = 0; c < dims; c++) s += (features[i * dims + c]! - features[j * dims + c]!) ** 2;
        k[i * n + j] = Math.exp(-s / 2);
      }
    }
    const norm = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += k[i * n + j]!;
      norm[i] = 1 / Math.sqrt(s);
    }
    return { k, norm };
  });
  const softmax = (energy: Float64Array): Float64Array => {
    const q = new Float64Array(energy.length);
    for (let i = 0; i < n; i++) {
      const row = energy.subarray(i * labels, (i + 1) * labels);
      const m = Math.max(...row);
      const e = row.map((v) => Math.exp(v - m));
      const s = e.reduce((a, b) => a + b, 0);
      for (let l = 0; l < labels; l++) q[i * labels + l] = e[l]! / s;
    }
    return q;
  };
  const minus = Float64Array.from(unary, (u) => -u);
  let q = softmax(minus);
  for (let it = 0; it < iterations; it++) {
    const energy = Float64Array.from(minus);
    terms.forEach((t, index) => {
      const { k, norm } = kernels[index]!;
      for (let i = 0; i < n; i++) {
        for (let l = 0; l < labels; l++) {
          let s = 0;
          for (let j = 0; j < n; j++) s += k[i * n + j]! * norm[j]! * q[j * labels + l]!;
          energy[i * labels + l]! += t.weight * norm[i]! * s;
        }
      }
    });
    q = softmax(energy);
  }
  return q;
}

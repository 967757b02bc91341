import { describe, expect, it } from 'vitest';
import { Tensor, type Gpu } from '../../src/index.js';
import { buildPermutohedralLattice, latticeTensors, meanField, splatPieces, meanFieldBruteForceReference, meanFieldKernel, meanFieldReference, permutohedralFilterReference, type PermutohedralLattice } from '../../src/kernels/index.js';
import { expectClose } from '../util/check.js';
import { forEachProfile } from '../util/gpu.js';
import { rng } from '../util/random.js';

/** A width × height image [N, 3] in 0-255: `structured` draws a disc and a bar on a gradient, else uniform noise. */
function image(width: number, height: number, seed: number, structured: boolean): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const disc = (x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2;
      const bar = x > (2 * width) / 3 && x < (2 * width) / 3 + 4;
      for (let c = 0; c < 3; c++) {
        out[i * 3 + c] = structured ? Math.round((disc ? 190 : bar ? 30 : 90 + (60 * x) / width) + 12 * (r() - 0.5) + c * 7) : Math.floor(256 * r());
      }
    }
  }
  return out;
}

/** densecrf's DenseCRF2D features: [x, y] / sxy, then colours / srgb when given. */
function features(width: number, height: number, sxy: number, colors?: Float32Array, srgb = 1): Float32Array {
  const d = colors ? 5 : 2;
  const out = new Float32Array(width * height * d);
  for (let i = 0; i < width * height; i++) {
    out[i * d] = (i % width) / sxy;
    out[i * d + 1] = Math.floor(i / width) / sxy;
    for (let c = 0; colors && c < 3; c++) out[i * d + 2 + c] = colors[i * 3 + c]! / srgb;
  }
  return out;
}

/**
 * Unary energies -log p [N, L]: (structured) a noisy guess of the disc / bar / rest, else random
 * per-pixel probabilities from logits uniform in [-4, 4).
 */
function unaries(width: number, height: number, labels: number, seed: number, structured: boolean): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(width * height * labels);
  for (let i = 0; i < width * height; i++) {
    const x = i % width;
    const y = Math.floor(i / width);
    const truth = (x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2 ? 1 : x > (2 * width) / 3 ? 2 % labels : 0;
    const p = Array.from({ length: labels }, (_, l) => (structured ? r() + (l === truth ? 0.8 : 0) : Math.exp(8 * (r() - 0.5))));
    const s = p.reduce((a, b) => a + b, 0);
    p.forEach((v, l) => (out[i * labels + l] = -Math.log(v / s)));
  }
  return out;
}

function argmax(q: ArrayLike<number>, labels: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < q.length / labels; i++) {
    let best = 0;
    for (let l = 1; l < labels; l++) if (q[i * labels + l]! > q[i * labels + best]!) best = l;
    out.push(best);
  }
  return out;
}

const agreement = (a: number[], b: number[]) => a.filter((v, i) => v === b[i]).length / a.length;

/** CaR's two terms on an image: Gaussian sxy 1 weight 3, bilateral sxy 67 srgb 3 weight 4. */
function carTerms(width: number, height: number, colors: Float32Array) {
  const gauss = features(width, height, 1);
  const bilateral = features(width, height, 67, colors, 3);
  return [
    { features: gauss, dims: 2, weight: 3, lattice: buildPermutohedralLattice(gauss, 2) },
    { features: bilateral, dims: 5, weight: 4, lattice: buildPermutohedralLattice(bilateral, 5) },
  ];
}

async function gpuMeanField(gpu: Gpu, unary: Float32Array, labels: number, terms: readonly { lattice: PermutohedralLattice; weight: number }[], iterations: number): Promise<Float32Array> {
  const owned: Tensor[] = [];
  try {
    const u = Tensor.from(gpu, unary, [unary.length / labels, labels]);
    owned.push(u);
    const gpuTerms = terms.map((t) => {
      const tensors = latticeTensors(gpu, t.lattice);
      owned.push(...tensors);
      return { tensors, weight: t.weight };
    });
    const q = await meanField(gpu, u, gpuTerms, iterations);
    owned.push(q);
    return (await q.read()) as Float32Array;
  } finally {
    for (const t of owned) t.dispose();
  }
}

describe('permutohedral lattice (CPU)', () => {
  it('barycentric weights are a partition of unity and blur neighbours are mutual', () => {
    for (const [w, h, structured] of [[24, 32, true], [40, 30, false]] as const) {
      for (const { lattice } of carTerms(w, h, image(w, h, 3, structured))) {
        const d1 = lattice.dims + 1;
        let worst = 0;
        for (let i = 0; i < lattice.points; i++) {
          const w = lattice.weights.subarray(i * d1, (i + 1) * d1);
          worst = Math.max(worst, Math.abs(w.reduce((a, b) => a + b, 0) - 1), -Math.min(...w));
        }
        expect(worst).toBeLessThan(1e-5);
        // n2 of n1 is the vertex itself along every axis (a lattice step and its inverse).
        const m = lattice.vertices;
        let unpaired = 0;
        for (let j = 0; j < d1; j++) {
          for (let v = 0; v < m; v++) {
            const a = lattice.neighbors[(j * m + v) * 2]!;
            if (a >= 0 && lattice.neighbors[(j * m + a) * 2 + 1] !== v) unpaired++;
          }
        }
        expect(unpaired).toBe(0);
        // Every (point, corner) splats once, into its vertex with its weight, points ascending per vertex.
        const seen = new Uint8Array(lattice.points * d1);
        let misplaced = 0;
        for (let v = 0; v < m; v++) {
          for (let e = lattice.splatStart[v]!; e < lattice.splatStart[v + 1]!; e++) {
            const point = lattice.splatPoints[e]!;
            const corner = Array.from(lattice.offsets.subarray(point * d1, (point + 1) * d1)).indexOf(v);
            if (corner < 0 || lattice.weights[point * d1 + corner] !== lattice.splatWeights[e] || (e > lattice.splatStart[v]! && point <= lattice.splatPoints[e - 1]!)) misplaced++;
            else seen[point * d1 + corner]!++;
          }
        }
        expect(misplaced).toBe(0);
        expect(seen.every((s) => s === 1)).toBe(true);
      }
    }
  });

  it('splat pieces: runs of at most max(32, √most) entries, never across vertices', () => {
    // Vertex 0 has 3 entries, vertex 1 none, vertex 2 97: pieces of 32.
    const { pieceStart, vertexPieces } = splatPieces(Uint32Array.from([0, 3, 3, 100]));
    expect(Array.from(pieceStart)).toEqual([0, 3, 3, 35, 67, 99, 100]);
    expect(Array.from(vertexPieces)).toEqual([0, 1, 2, 6]);
    // 10000 entries on one vertex: pieces of 100.
    const big = splatPieces(Uint32Array.from([0, 1, 10001]));
    expect(big.pieceStart.length - 1).toBe(101);
    expect(big.pieceStart[2]! - big.pieceStart[1]!).toBe(100);
  });

  it('the filter is symmetric and, normalised, close to the exact Gaussian', () => {
    const [w, h] = [20, 16];
    const feats = features(w, h, 2.5);
    const lattice = buildPermutohedralLattice(feats, 2);
    const n = w * h;
    // Response to a unit impulse at a and read at b equals the response at a to an impulse at b.
    const impulse = (at: number) => permutohedralFilterReference(lattice, Float32Array.from({ length: n }, (_, i) => (i === at ? 1 : 0)), 1);
    const [a, b] = [5 * w + 7, 7 * w + 9];
    expect(Math.abs(impulse(a)[b]! - impulse(b)[a]!)).toBeLessThan(1e-6);
    // Row a of K, scaled to sum 1, against the exact exp(-|f_a - f_j|²/2) scaled alike.
    const row = impulse(a);
    const exact = Array.from({ length: n }, (_, j) => Math.exp(-(((feats[2 * a]! - feats[2 * j]!) ** 2 + (feats[2 * a + 1]! - feats[2 * j + 1]!) ** 2) / 2)));
    const sum = (x: ArrayLike<number>) => Array.from(x).reduce((s, v) => s + v, 0);
    const [sr, se] = [sum(row), sum(exact)];
    let err = 0;
    for (let j = 0; j < n; j++) err = Math.max(err, Math.abs(row[j]! / sr - exact[j]! / se));
    // The lattice is an approximation: 0.03 of a peak of ~0.06.
    expect(err).toBeLessThan(0.03);
  });

  // The permutohedral approximation against exact O(N²) Gaussian sums, CaR's settings, 10 iterations.
  // Where the unaries follow the image (as CAMs roughly do), measured: max |ΔQ| 0.004-0.03, labels
  // agree on 100%. With random per-pixel unaries the mean field decides near-ties that the lattice's
  // kernel error (~5-15% near the centre) tips either way: 98.0% and 99.4% agreement below, 96-99.6%
  // over other seeds, so that regime is held to 95%.
  for (const [w, h, labels, scene, unary, minAgree] of [
    [32, 24, 3, true, true, 0.99],
    [40, 30, 4, true, true, 0.99],
    [40, 30, 3, false, true, 0.99],
    [32, 24, 2, true, false, 0.95],
    [40, 30, 4, false, false, 0.95],
  ] as const) {
    it(`lattice mean field vs brute force: ${w}×${h}, ${labels} labels, ${scene ? 'scene' : 'noise'} image, ${unary ? 'scene' : 'random'} unaries`, () => {
      const seed = w + labels;
      const terms = carTerms(w, h, image(w, h, seed, scene));
      const u = unaries(w, h, labels, seed + 10, unary);
      const q = meanFieldReference(u, labels, terms, 10);
      const exact = meanFieldBruteForceReference(u, labels, terms, 10);
      if (minAgree === 0.99) expectClose(q, exact, { atol: 0.05, label: 'Q lattice vs exact' });
      expect(agreement(argmax(q, labels), argmax(exact, labels))).toBeGreaterThanOrEqual(minAgree);
    });
  }
});

forEachProfile((_, getGpu) => {
  describe('meanField', () => {
    // Against densecrf's arithmetic on the same lattices (f32, summed in another order): 1e-4. Against
    // the exact CRF where the unaries follow the image (see the CPU tests above): 0.05 and 99% of labels.
    for (const [w, h, labels, scene, sceneUnary] of [
      [32, 24, 2, true, true],
      [40, 30, 4, false, true],
      [17, 5, 3, true, false],
      [40, 30, 3, false, false],
      [23, 19, 6, true, true], // two chunks of four labels, two lanes unused
      [16, 12, 9, false, false],
    ] as const) {
      it(`matches densecrf's inference (CPU reference): ${w}×${h}, ${labels} labels, ${scene ? 'scene' : 'noise'} image, ${sceneUnary ? 'scene' : 'random'} unaries`, async () => {
        const gpu = await getGpu();
        const seed = w * h + labels;
        const terms = carTerms(w, h, image(w, h, seed, scene));
        const unary = unaries(w, h, labels, seed + 20, sceneUnary);
        const q = await gpuMeanField(gpu, unary, labels, terms, 10);
        expectClose(q, meanFieldReference(unary, labels, terms, 10), { atol: 1e-4, label: 'Q GPU vs densecrf reference' });
        if (!sceneUnary) return;
        const exact = meanFieldBruteForceReference(unary, labels, terms, 10);
        expectClose(q, exact, { atol: 0.05, label: 'Q GPU vs exact' });
        expect(agreement(argmax(q, labels), argmax(exact, labels))).toBeGreaterThanOrEqual(0.99);
      });
    }

    it('flat colours: bilateral vertices with hundreds of entries take the two-pass splat', async () => {
      const gpu = await getGpu();
      const [w, h, labels] = [36, 28, 3];
      // Two flat halves: each half's pixels share a few bilateral vertices.
      const colors = Float32Array.from({ length: w * h * 3 }, (_, j) => ((Math.floor(j / 3) % w) < w / 2 ? 40 : 200));
      const terms = carTerms(w, h, colors);
      expect(splatPieces(terms[0]!.lattice.splatStart).pieceStart.length - 1).toBe(terms[0]!.lattice.vertices);
      expect(splatPieces(terms[1]!.lattice.splatStart).pieceStart.length - 1).toBeGreaterThan(terms[1]!.lattice.vertices);
      const unary = unaries(w, h, labels, 31, true);
      const q = await gpuMeanField(gpu, unary, labels, terms, 10);
      expectClose(q, meanFieldReference(unary, labels, terms, 10), { atol: 1e-4, label: 'Q GPU vs densecrf reference' });
      const exact = meanFieldBruteForceReference(unary, labels, terms, 10);
      expect(agreement(argmax(q, labels), argmax(exact, labels))).toBeGreaterThanOrEqual(0.99);
    });

    it('one term, 0 and 1 iterations, a single label', async () => {
      const gpu = await getGpu();
      const [w, h] = [9, 7];
      const terms = carTerms(w, h, image(w, h, 8, true)).slice(1);
      const unary = unaries(w, h, 3, 9, true);
      for (const iterations of [0, 1]) {
        expectClose(await gpuMeanField(gpu, unary, 3, terms, iterations), meanFieldReference(unary, 3, terms, iterations), { atol: 2e-6, label: `${iterations} iterations` });
      }
      const ones = await gpuMeanField(gpu, new Float32Array(w * h).fill(0.5), 1, terms, 2);
      expect(Array.from(ones).every((v) => v === 1)).toBe(true);
    });

    it('refuses mismatched inputs before dispatch, naming the tensor', () => {
      const lattice = buildPermutohedralLattice(features(4, 3, 1), 2);
      const info = (shape: number[], dtype: 'f32' | 'i32' | 'u32' = 'f32') => ({ shape, dtype });
      const m = lattice.vertices;
      const good = [info([12, 3], 'i32'), info([12, 3]), info([3, m, 2], 'i32'), info([m + 1], 'u32'), info([m + 1], 'u32'), info([36], 'u32'), info([36]), info([12])];
      const o = { iterations: 10, weights: [3] };
      expect(meanFieldKernel.outputs([info([12, 2]), ...good], o)).toEqual([{ shape: [12, 2], dtype: 'f32' }]);
      expect(() => meanFieldKernel.outputs([info([12, 2]), ...good], { iterations: 10, weights: [3, 4] })).toThrow(/17 inputs/);
      expect(() => meanFieldKernel.outputs([info([11, 2]), ...good], o)).toThrow(/term 0 offsets must be \[11, d\+1\]/);
      expect(() => meanFieldKernel.outputs([info([12, 2]), ...good.slice(0, 7), info([11])], o)).toThrow(/term 0 norm must be f32 \[12\]/);
      expect(() => meanFieldKernel.outputs([info([12, 2]), good[0]!, info([12, 3], 'i32'), ...good.slice(2)], o)).toThrow(/term 0 weights must be f32/);
      expect(() => meanFieldKernel.outputs([info([12, 2]), ...good], { iterations: 1.5, weights: [3] })).toThrow(/iterations must be an integer/);
      expect(() => meanFieldKernel.outputs([info([12, 2]), ...good], { iterations: 1, weights: [NaN] })).toThrow(/weights must be finite/);
    });
  });
});

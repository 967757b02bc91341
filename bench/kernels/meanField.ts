// CaR's dense CRF at 448×448 (a CLIP ViT-B/16 input): 10 mean-field iterations over the Gaussian
// (sxy 1) and bilateral (sxy 67, srgb 3) lattices of a synthetic scene, 2 labels (CaR's default
// 'refer' mode: background + one query, run once per query) and 6 (background + 5 queries at once).
// The lattices are built on the CPU once per image (crfLattices) and are inputs here; pixels per
// second = 448² / (ms / 1000).
import { crfLattices } from '../../src/models/car/crf.js';
import { latticeArrays, LATTICE_TENSORS, meanFieldKernel, type MeanFieldOptions, type PermutohedralLattice } from '../../src/kernels/index.js';
import type { BenchInput, KernelBenchCase } from '../types.js';

const SIZE = 448;

/** A disc and a bar on a gradient, with a little noise (a deterministic hash, no RNG state). */
function scene(): Uint8Array {
  const rgba = new Uint8Array(SIZE * SIZE * 4);
  for (let i = 0; i < SIZE * SIZE; i++) {
    const [x, y] = [i % SIZE, Math.floor(i / SIZE)];
    const noise = ((Math.imul(i, 2654435761) >>> 24) / 255 - 0.5) * 12;
    const base = (x - 180) ** 2 + (y - 240) ** 2 < 110 ** 2 ? 190 : x > 330 && x < 360 ? 40 : 60 + x / 4;
    for (let c = 0; c < 3; c++) rgba[4 * i + c] = Math.round(base + 12 * c + noise);
    rgba[4 * i + 3] = 255;
  }
  return rgba;
}

let lattices: { lattice: PermutohedralLattice; weight: number }[] | undefined;
/** Built on first use: importing the bench registry should not pay for it. */
const terms = () => (lattices ??= crfLattices(scene(), SIZE, SIZE));

/** One term's eight inputs; getters, so that the lattices are built when a case runs. */
function latticeInputs(term: number): BenchInput[] {
  let arrays: ReturnType<typeof latticeArrays> | undefined;
  const get = () => (arrays ??= latticeArrays(terms()[term]!.lattice));
  return Array.from({ length: LATTICE_TENSORS.length }, (_, i) => ({
    get shape() {
      return get()[i]!.shape;
    },
    get dtype() {
      return get()[i]!.dtype;
    },
    get data() {
      return get()[i]!.data;
    },
  }));
}

function crfCase(labels: number): KernelBenchCase<MeanFieldOptions> {
  const n = SIZE * SIZE;
  return {
    kernel: meanFieldKernel,
    label: `CaR CRF ${SIZE}x${SIZE} (${n} px), ${labels} labels, 10 iterations, Gaussian + bilateral lattices`,
    inputs: [
      { shape: [n, labels], data: Float32Array.from({ length: n * labels }, (_, j) => 0.1 + ((j * 7919) % 997) / 400) },
      ...latticeInputs(0),
      ...latticeInputs(1),
    ],
    options: { iterations: 10, weights: [3, 4] },
  };
}

export const cases: KernelBenchCase[] = [crfCase(2), crfCase(6)];

// Dense CRF post-processing as CaR (clip_as_rnn/modeling/model/crf.py) runs it through pydensecrf:
// unary = -log(clip(p, 1e-5, 1)), a Gaussian term (sxy 1, Potts weight 3) and a bilateral term
// (sxy 67, srgb 3, weight 4), 10 mean-field iterations, then the argmax label. The lattices are
// built on the CPU (buildPermutohedralLattice, densecrf's construction); the iterations run on the
// GPU (meanFieldKernel).
import type { Gpu } from '../../gpu/gpu.js';
import { Tensor } from '../../tensor.js';
import { buildPermutohedralLattice, type PermutohedralLattice } from '../../kernels/permutohedral.js';
import { latticeTensors, meanField, type MeanFieldTerm } from '../../kernels/meanField.js';
import { InputError, checkFinite } from '../inputs.js';

const OP = 'denseCrf';
const f = Math.fround;

export interface DenseCrfOptions {
  /** Mean-field iterations (CaR: iter_max 10). */
  iterations?: number;
  /** Spatial standard deviation of the Gaussian (smoothness) term in pixels (CaR: pos_xy_std 1). */
  gaussianSxy?: number;
  /** Its Potts weight (CaR: pos_w 3); 0 drops the term. */
  gaussianWeight?: number;
  /** Spatial standard deviation of the bilateral (appearance) term in pixels (CaR: bi_xy_std 67). */
  bilateralSxy?: number;
  /** Its colour standard deviation in 0-255 units (CaR: bi_rgb_std 3). */
  bilateralSrgb?: number;
  /** Its Potts weight (CaR: bi_w 4); 0 drops the term. */
  bilateralWeight?: number;
  /** Probabilities are clipped to [clip, 1] before -log (pydensecrf's unary_from_softmax: 1e-5). */
  clip?: number;
  /**
   * The colours the bilateral term compares. 'car' (default): what CaR hands pydensecrf, the image
   * as BGR minus the Caffe mean (104.008, 116.669, 122.675), cast to uint8 as numpy does on x86-64
   * (truncated, negatives wrapped modulo 256), so colours just below the mean sit far from those
   * just above it. 'rgb': the plain RGB values, as pydensecrf's examples pass them.
   */
  colors?: 'car' | 'rgb';
}

/** CaR's settings (PostProcess in crf.py). */
export const CAR_CRF_DEFAULTS: Readonly<Required<DenseCrfOptions>> = {
  iterations: 10,
  gaussianSxy: 1,
  gaussianWeight: 3,
  bilateralSxy: 67,
  bilateralSrgb: 3,
  bilateralWeight: 4,
  clip: 1e-5,
  colors: 'car',
};

export interface DenseCrfResult {
  /** [H·W] the most probable label of each pixel (the first on ties, as np.argmax). */
  labels: Int32Array;
  /** [L, H, W] the mean-field marginals Q (pydensecrf's inference output), label-major like the input. */
  marginals: Float32Array;
}

/** Caffe's BGR mean, which CaR subtracts before the uint8 cast. */
const MEAN_BGR = [104.008, 116.669, 122.675] as const;

function positive(name: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) throw new InputError(OP, `${name} must be a finite number > 0, got ${v}`);
  return v;
}

function resolve(options: DenseCrfOptions): Required<DenseCrfOptions> {
  const o = { ...CAR_CRF_DEFAULTS, ...options };
  if (!(Number.isInteger(o.iterations) && o.iterations >= 0)) throw new InputError(OP, `iterations must be an integer >= 0, got ${o.iterations}`);
  for (const name of ['gaussianSxy', 'bilateralSxy', 'bilateralSrgb'] as const) positive(name, o[name]);
  for (const name of ['gaussianWeight', 'bilateralWeight'] as const) {
    if (!Number.isFinite(o[name])) throw new InputError(OP, `${name} must be a finite number, got ${o[name]}`);
  }
  if (!(o.clip > 0 && o.clip <= 1)) throw new InputError(OP, `clip must be in (0, 1], got ${o.clip}`);
  if (o.colors !== 'car' && o.colors !== 'rgb') throw new InputError(OP, `colors must be 'car' or 'rgb', got ${JSON.stringify(o.colors)}`);
  return o;
}

/**
 * The three colour channels [H·W, 3] the bilateral term compares for an RGBA image (see
 * DenseCrfOptions.colors): CaR's wrapped BGR minus the mean, or plain RGB.
 */
export function crfColors(rgba: ArrayLike<number>, width: number, height: number, mode: 'car' | 'rgb' = 'car'): Uint8Array {
  checkImage(rgba, width, height);
  const n = width * height;
  const out = new Uint8Array(3 * n);
  // float32(v - mean) in numpy, then float32 → uint8: truncate toward zero, keep the low 8 bits.
  const wrap = (v: number, mean: number) => Math.trunc(f(v - mean)) & 255;
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [rgba[4 * i]!, rgba[4 * i + 1]!, rgba[4 * i + 2]!];
    out.set(mode === 'rgb' ? [r, g, b] : [wrap(b, MEAN_BGR[0]), wrap(g, MEAN_BGR[1]), wrap(r, MEAN_BGR[2])], 3 * i);
  }
  return out;
}

/** densecrf's DenseCRF2D features: [x/sxy, y/sxy] per pixel, with the colours [H·W, 3] / srgb when given. */
function pixelFeatures(width: number, height: number, sxy: number, colors?: Uint8Array, srgb = 1): Float32Array {
  const d = colors ? 5 : 2;
  const out = new Float32Array(width * height * d);
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i++) {
      out[i * d] = x / sxy;
      out[i * d + 1] = y / sxy;
      if (colors) for (let k = 0; k < 3; k++) out[i * d + 2 + k] = colors[3 * i + k]! / srgb;
    }
  }
  return out;
}

function checkImage(rgba: ArrayLike<number>, width: number, height: number): void {
  for (const [name, v] of [['width', width], ['height', height]] as const) {
    if (!(Number.isInteger(v) && v >= 1)) throw new InputError(OP, `${name} must be an integer >= 1, got ${v}`);
  }
  if (!rgba || typeof rgba.length !== 'number' || rgba.length !== 4 * width * height) {
    throw new InputError(OP, `rgba must hold 4·width·height = ${4 * width * height} bytes (RGBA, ${width}×${height}), got ${rgba?.length}`);
  }
  // A float image in [0, 1] would pass as near-black colours: only bytes are accepted.
  if (!(rgba instanceof Uint8Array || rgba instanceof Uint8ClampedArray)) {
    for (let i = 0; i < rgba.length; i++) {
      const v = rgba[i]!;
      if (!(Number.isInteger(v) && v >= 0 && v <= 255)) throw new InputError(OP, `rgba must hold integers 0-255, got ${v} at index ${i}`);
    }
  }
}

/**
 * The pairwise terms of an RGBA image as densecrf builds them (the CPU half of the CRF): the
 * Gaussian term's lattice over [x, y] / gaussianSxy and the bilateral term's over
 * [x, y] / bilateralSxy and the colours / bilateralSrgb, each with its Potts weight; a term of
 * weight 0 is left out.
 */
export function crfLattices(rgba: ArrayLike<number>, width: number, height: number, options: DenseCrfOptions = {}): { lattice: PermutohedralLattice; weight: number }[] {
  checkImage(rgba, width, height);
  const o = resolve(options);
  const terms: { lattice: PermutohedralLattice; weight: number }[] = [];
  if (o.gaussianWeight !== 0) terms.push({ lattice: buildPermutohedralLattice(pixelFeatures(width, height, o.gaussianSxy), 2), weight: o.gaussianWeight });
  if (o.bilateralWeight !== 0) {
    const features = pixelFeatures(width, height, o.bilateralSxy, crfColors(rgba, width, height, o.colors), o.bilateralSrgb);
    terms.push({ lattice: buildPermutohedralLattice(features, 5), weight: o.bilateralWeight });
  }
  return terms;
}

/**
 * An image's CRF lattices on the GPU, built once and reused for every probability map of that
 * image (CaR's 'refer' mode runs one CRF per query on the same image).
 */
export class DenseCrfImage {
  private constructor(
    private readonly gpu: Gpu,
    readonly width: number,
    readonly height: number,
    private readonly options: Required<DenseCrfOptions>,
    private readonly terms: MeanFieldTerm[],
  ) {}

  /** Builds the Gaussian and bilateral lattices of an RGBA image [H, W, 4] (uint8 values) and uploads them. */
  static prepare(gpu: Gpu, rgba: ArrayLike<number>, width: number, height: number, options: DenseCrfOptions = {}): DenseCrfImage {
    const o = resolve(options);
    const terms: MeanFieldTerm[] = [];
    try {
      for (const { lattice, weight } of crfLattices(rgba, width, height, o)) terms.push({ tensors: latticeTensors(gpu, lattice), weight });
    } catch (err) {
      for (const t of terms) for (const x of t.tensors) x.dispose();
      throw err;
    }
    return new DenseCrfImage(gpu, width, height, o, terms);
  }

  /**
   * Mean-field inference from probabilities [L, H, W] (L ≥ 2 labels, label-major as CaR's probmap;
   * they need not sum to 1: -log(clip(p)) is the unary, as pydensecrf's unary_from_softmax).
   */
  async run(probabilities: ArrayLike<number>): Promise<DenseCrfResult> {
    const n = this.width * this.height;
    const len = probabilities?.length;
    if (typeof len !== 'number' || len === 0 || len % n !== 0 || len / n < 2) {
      throw new InputError(OP, `probabilities must be [L, H, W] = L·${this.height}·${this.width} values with L >= 2 labels, got ${len} values`);
    }
    checkFinite(OP, 'probabilities', probabilities);
    const labels = len / n;
    const unary = new Float32Array(len);
    for (let l = 0; l < labels; l++) {
      for (let i = 0; i < n; i++) unary[i * labels + l] = -Math.log(f(Math.min(1, Math.max(this.options.clip, probabilities[l * n + i]!))));
    }
    const u = Tensor.from(this.gpu, unary, [n, labels]);
    let q: Float32Array;
    try {
      const t = await meanField(this.gpu, u, this.terms, this.options.iterations);
      try {
        q = (await t.read()) as Float32Array;
      } finally {
        t.dispose();
      }
    } finally {
      u.dispose();
    }
    const marginals = new Float32Array(len);
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let l = 0; l < labels; l++) {
        const v = q[i * labels + l]!;
        marginals[l * n + i] = v;
        if (v > q[i * labels + best]!) best = l;
      }
      out[i] = best;
    }
    return { labels: out, marginals };
  }

  dispose(): void {
    for (const t of this.terms) for (const x of t.tensors) x.dispose();
    this.terms.length = 0;
  }
}

/**
 * Dense CRF refinement of probabilities [L, H, W] on an RGBA image (width × height, 4 bytes per
 * pixel), with CaR's settings by default. Returns the labels [H·W] and marginals [L, H, W].
 */
export async function denseCrf(gpu: Gpu, rgba: ArrayLike<number>, width: number, height: number, probabilities: ArrayLike<number>, options: DenseCrfOptions = {}): Promise<DenseCrfResult> {
  const image = DenseCrfImage.prepare(gpu, rgba, width, height, options);
  try {
    return await image.run(probabilities);
  } finally {
    image.dispose();
  }
}

/**
 * CaR's CRF input from CAMs [K, H, W] (apply_crf): a background row (1 - max_k cam)^bgFactor, then
 * the CAMs, [1 + K, H, W]. CaR runs this per CAM (K = 1) in its default 'refer' mode and on all
 * CAMs at once in 'semantic' mode; label 0 of the result is the background, label k the k-th CAM.
 */
export function crfProbabilitiesFromCams(cams: ArrayLike<number>, width: number, height: number, bgFactor = 1): Float32Array {
  const op = 'crfProbabilitiesFromCams';
  const n = width * height;
  if (!(Number.isInteger(width) && width >= 1 && Number.isInteger(height) && height >= 1)) throw new InputError(op, `width and height must be integers >= 1, got ${width}×${height}`);
  if (typeof cams?.length !== 'number' || cams.length === 0 || cams.length % n !== 0) {
    throw new InputError(op, `cams must be [K, H, W] = K·${height}·${width} values with K >= 1, got ${cams?.length} values`);
  }
  if (!Number.isFinite(bgFactor)) throw new InputError(op, `bgFactor must be a finite number, got ${bgFactor}`);
  checkFinite(op, 'cams', cams);
  const k = cams.length / n;
  const out = new Float32Array((k + 1) * n);
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let c = 0; c < k; c++) m = Math.max(m, f(cams[c * n + i]!));
    const bg = f(Math.pow(f(1 - m), bgFactor));
    if (Number.isNaN(bg)) throw new InputError(op, `background (1 - max cam)^bgFactor is NaN at pixel ${i} (max cam ${m} > 1 with a fractional bgFactor ${bgFactor}): CAMs must lie in [0, 1]`);
    out[i] = bg;
  }
  for (let c = 0; c < k; c++) for (let i = 0; i < n; i++) out[(c + 1) * n + i] = cams[c * n + i]!;
  return out;
}

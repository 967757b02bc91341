// CLIP's vision position embedding at another grid than it was trained at, as CaR's
// `upsample_position_embedding` (clip_as_rnn/modeling/model/clip_wrapper.py) does it: the class
// row is kept, the patch rows [gh0·gw0, D] are viewed as a [D, gh0, gw0] image, resized with
// F.upsample (align_corners=False), and the whole embedding is rounded to fp16 (CaR's `.half()`).
// Weights are preprocessed once per grid on the CPU, like loading: the arithmetic follows
// PyTorch's CPU kernel in float32 (index and weight computation, then the separable sum in its
// order), because the fp16 rounding afterwards is sensitive to the last bit.
import { f32ToF16Bits } from '../../dtype.js';
import { decodeTensorData } from '../../tensor.js';

export type PositionInterpolation = 'bilinear' | 'bicubic';

export interface PositionEmbeddingOptions {
  /** F.upsample mode (default 'bilinear', as CaR). */
  mode?: PositionInterpolation;
  /** Round the result to fp16 as CaR's `.half()` (default true); false keeps float32. */
  half?: boolean;
}

const f = Math.fround;

/** One output index's source indices and weights along an axis (PyTorch's compute_indices_weights). */
interface Taps {
  index: number[];
  weight: number[];
}

/** Bilinear taps, align_corners=False: area_pixel_compute_source_index clamped at 0, lambdas in f32. */
function linearTaps(inSize: number, outSize: number): Taps[] {
  const scale = f(inSize / outSize);
  return Array.from({ length: outSize }, (_, o) => {
    // A same-size resize copies (PyTorch special-cases it).
    if (inSize === outSize) return { index: [o, o], weight: [1, 0] };
    const real = Math.max(0, f(f(scale * f(o + 0.5)) - 0.5));
    const i0 = Math.trunc(real);
    const i1 = i0 + (i0 < inSize - 1 ? 1 : 0);
    const l1 = Math.min(Math.max(f(real - i0), 0), 1);
    return { index: [i0, i1], weight: [f(1 - l1), l1] };
  });
}

/** Keys' cubic convolution weights with A = -0.75 (PyTorch's get_cubic_upsample_coefficients). */
function cubicWeights(t: number): number[] {
  const a = -0.75;
  // ((A + 2)·x - (A + 3))·x·x + 1 and ((A·x - 5A)·x + 8A)·x - 4A, rounded after every operation.
  const near = (x: number) => f(f(f(f(f(f(a + 2) * x) - f(a + 3)) * x) * x) + 1);
  const far = (x: number) => f(f(f(f(f(f(a * x) - f(5 * a)) * x) + f(8 * a)) * x) - f(4 * a));
  return [far(f(t + 1)), near(t), near(f(1 - t)), far(f(f(1 - t) + 1))];
}

/** Bicubic taps, align_corners=False: the source index is not clamped at 0, the taps' indices are. */
function cubicTaps(inSize: number, outSize: number): Taps[] {
  const scale = f(inSize / outSize);
  return Array.from({ length: outSize }, (_, o) => {
    const real = f(f(scale * f(o + 0.5)) - 0.5);
    const i = Math.min(Math.floor(real), inSize - 1);
    const t = Math.min(Math.max(f(real - i), 0), 1);
    return { index: [-1, 0, 1, 2].map((k) => Math.min(Math.max(i + k, 0), inSize - 1)), weight: cubicWeights(t) };
  });
}

/** Σ_k value(k)·w_k in float32, accumulated in PyTorch's order. */
function dot(taps: Taps, value: (i: number) => number): number {
  let acc = f(value(taps.index[0]!) * taps.weight[0]!);
  for (let k = 1; k < taps.index.length; k++) acc = f(acc + f(value(taps.index[k]!) * taps.weight[k]!));
  return acc;
}

/** x rounded to the nearest fp16 value (ties to even), back in float32. */
function roundToF16(x: Float32Array): Float32Array {
  const bits = new Uint16Array(x.length);
  f32ToF16Bits(x, bits);
  return decodeTensorData(bits.buffer, 'f16', x.length) as Float32Array;
}

/**
 * The position embedding `pos` [1 + from[0]·from[1], dim] (class row first, patch rows row-major)
 * for a grid of `to` = [gh, gw] patches: [1 + gh·gw, dim].
 */
export function resizePositionEmbedding(pos: Float32Array, dim: number, from: readonly [number, number], to: readonly [number, number], options: PositionEmbeddingOptions = {}): Float32Array {
  const { mode = 'bilinear', half = true } = options;
  const [h0, w0] = from;
  const [h1, w1] = to;
  if (pos.length !== (1 + h0 * w0) * dim) throw new RangeError(`position embedding has ${pos.length} values, expected (1 + ${h0}·${w0})·${dim}`);
  const taps = mode === 'bicubic' ? cubicTaps : linearTaps;
  const ty = taps(h0, h1);
  const tx = taps(w0, w1);
  const out = new Float32Array((1 + h1 * w1) * dim);
  out.set(pos.subarray(0, dim));
  for (let y = 0; y < h1; y++) {
    for (let x = 0; x < w1; x++) {
      const row = (1 + y * w1 + x) * dim;
      for (let c = 0; c < dim; c++) {
        // Source patch (sy, sx) of channel c is pos[1 + sy·w0 + sx, c]; rows first, then columns, as PyTorch's recursion.
        out[row + c] = dot(ty[y]!, (sy) => dot(tx[x]!, (sx) => pos[(1 + sy * w0 + sx) * dim + c]!));
      }
    }
  }
  return half ? roundToF16(out) : out;
}

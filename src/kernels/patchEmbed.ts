import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, specialize, uniforms, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import patchEmbedWgsl from '../../shaders/patchEmbed.wgsl';

export interface PatchEmbedOptions {
  /** Patch side p: the conv's kernel size and stride. */
  patchSize: number;
}

const NAME = 'patchEmbed';
const WG = 64;
/** Token rows per invocation: must equal TM in shaders/patchEmbed.wgsl. */
const TM = 8;

const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * ViT patch embedding. Inputs [pixels [B, C, H, W], weight [D, C, p, p] (PyTorch conv layout, no
 * bias), classEmbedding [D], positionEmbedding [1 + (H/p)(W/p), D]]; output [B, 1 + (H/p)(W/p), D]
 * with the class token at index 0 and the position embedding added to every token.
 */
export const patchEmbedKernel: Kernel<PatchEmbedOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(inputs.length === 4, NAME, () => `expected inputs [pixels, weight, classEmbedding, positionEmbedding], got ${inputs.length} inputs`);
    const [pixels, weight, cls, pos] = inputs as [TensorInfo, TensorInfo, TensorInfo, TensorInfo];
    const p = o?.patchSize;
    check(Number.isInteger(p) && p! >= 1, NAME, `patchSize must be a positive integer, got ${p}`);
    check(pixels.dtype === 'f32' || pixels.dtype === 'f16', NAME, `pixels must be f32 or f16, got ${pixels.dtype}`);
    check(pixels.shape.length === 4 && pixels.shape[1]! >= 1, NAME, () => `pixels must be [B, C, H, W], got ${shapeString(pixels.shape)}`);
    const [b, c, h, w] = pixels.shape as [number, number, number, number];
    check(
      h >= p! && w >= p! && h % p! === 0 && w % p! === 0,
      NAME,
      () => `pixels height ${h} and width ${w} must be positive multiples of patchSize ${p}`,
    );
    const d = weight.shape[0]!;
    check(weight.shape.length === 4 && d >= 1 && same(weight.shape.slice(1), [c, p!, p!]), NAME, () => `weight must be [D, ${c}, ${p}, ${p}], got ${shapeString(weight.shape)}`);
    const tokens = 1 + (h / p!) * (w / p!);
    check(same(cls.shape, [d]), NAME, () => `classEmbedding must be [${d}], got ${shapeString(cls.shape)}`);
    check(same(pos.shape, [tokens, d]), NAME, () => `positionEmbedding must be [${tokens}, ${d}] (1 + (${h}/${p})·(${w}/${p}) tokens), got ${shapeString(pos.shape)}`);
    for (const [name, t] of [['weight', weight], ['classEmbedding', cls], ['positionEmbedding', pos]] as const) {
      check(t.dtype === pixels.dtype, NAME, `${name} must be ${pixels.dtype} like pixels, got ${t.dtype}`);
    }
    return [{ shape: [b, tokens, d], dtype: pixels.dtype }];
  },
  plan(gpu, inputs, outputs, o) {
    const [pixels, weight] = inputs as [TensorInfo, TensorInfo];
    const [b, tokens, d] = outputs[0]!.shape as [number, number, number];
    const [, c, h, w] = pixels.shape as [number, number, number, number];
    const p = o.patchSize;
    const rows = b * tokens;
    const colBlocks = Math.ceil(d / 4);
    const k = c * p * p;
    return {
      dispatches: [
        {
          program: { name: NAME, key: pixels.dtype, code: specialize(patchEmbedWgsl, pixels.dtype), constants: { WG }, bindings: ['read', 'read', 'read', 'read', 'write'] },
          tensors: [0, 1, 2, 3, 4],
          uniforms: uniforms(c, h, w, p, w / p, tokens, d, rows, colBlocks),
          workgroups: grid1d(gpu, Math.ceil(rows / TM) * colBlocks, WG),
        },
      ],
      flops: 2 * b * (tokens - 1) * d * k,
      bytes: (sizeOf(pixels.shape) + sizeOf(weight.shape) + d + tokens * d + rows * d) * BYTES_PER_ELEMENT[pixels.dtype],
    };
  },
};

/**
 * The backward of `patchEmbedKernel`. Inputs [pixels [B, C, H, W], weight [D, C, p, p], dy [B,
 * tokens, D]] (dy: the gradient of the tokens); outputs [dPixels (pixels' shape), dWeight (weight's
 * shape), dClassEmbedding [D], dPositionEmbedding [tokens, D]]. One dispatch per output but the
 * class embedding's, which comes with the position embedding's (it is its token-0 row).
 */
export const patchEmbedBackwardKernel: Kernel<PatchEmbedOptions> = {
  name: 'patchEmbedBackward',
  outputs(inputs, o) {
    const op = 'patchEmbedBackward';
    check(inputs.length === 3, op, () => `expected inputs [pixels, weight, dy], got ${inputs.length} inputs`);
    const [pixels, weight, dy] = inputs as [TensorInfo, TensorInfo, TensorInfo];
    // The forward's checks (errors name patchEmbed's arguments), with placeholders for the
    // embeddings it does not need: they are checked only once pixels and weight passed, and then fit.
    const d = weight.shape[0] ?? 0;
    const p = o?.patchSize ?? 1;
    const tokens = 1 + Math.floor((pixels.shape[2] ?? 0) / p) * Math.floor((pixels.shape[3] ?? 0) / p);
    const [y] = patchEmbedKernel.outputs([pixels, weight, { shape: [d], dtype: pixels.dtype }, { shape: [tokens, d], dtype: pixels.dtype }], o);
    check(dy.dtype === pixels.dtype, op, `dy must be ${pixels.dtype} like pixels, got ${dy.dtype}`);
    check(same(dy.shape, y!.shape), op, () => `dy must be ${shapeString(y!.shape)} (the tokens' shape), got ${shapeString(dy.shape)}`);
    return [pixels, weight, { shape: [d], dtype: pixels.dtype }, { shape: [tokens, d], dtype: pixels.dtype }].map((t) => ({ shape: [...t.shape], dtype: pixels.dtype }));
  },
  plan(gpu, inputs, outputs, o) {
    const [pixels, weight] = inputs as [TensorInfo, TensorInfo];
    const [b, c, h, w] = pixels.shape as [number, number, number, number];
    const [d, tokens] = [weight.shape[0]!, outputs[3]!.shape[0]!];
    const p = o.patchSize;
    const params = uniforms(c, h, w, p, w / p, tokens, d, b, 0);
    const code = specialize(patchEmbedWgsl, pixels.dtype);
    const step = (entryPoint: string, count: number, out: number) => ({
      program: { name: `patchEmbedBackward.${entryPoint}`, key: pixels.dtype, code, entryPoint, constants: { WG }, bindings: ['read', 'read', 'read', 'write', 'write'] as const },
      tensors: [0, 1, 2, out, 5],
      uniforms: params,
      workgroups: grid1d(gpu, count, WG),
    });
    const k = c * p * p;
    return {
      // p % 4 == 0 (ViT-B/32 and /16): the blocked entry points (see the shader).
      dispatches:
        p % 4 === 0
          ? [step('d_pixels4', Math.ceil((b * (tokens - 1)) / TM) * (k / 4), 3), step('d_weight4', Math.ceil(d / 4) * (k / 4), 4), step('d_position', tokens * d, 6)]
          : [step('d_pixels', sizeOf(pixels.shape), 3), step('d_weight', d * k, 4), step('d_position', tokens * d, 6)],
      flops: 4 * b * (tokens - 1) * d * k,
      bytes: (2 * sizeOf(pixels.shape) + 2 * sizeOf(weight.shape) + 3 * b * tokens * d) * BYTES_PER_ELEMENT[pixels.dtype],
    };
  },
};

/** Image → tokens: patch conv (no bias) as a matmul, class token first, position embedding added. */
export async function patchEmbed(
  gpu: Gpu,
  pixels: Tensor,
  weight: Tensor,
  classEmbedding: Tensor,
  positionEmbedding: Tensor,
  options: PatchEmbedOptions,
): Promise<Tensor> {
  return (await runKernel(gpu, patchEmbedKernel, [pixels, weight, classEmbedding, positionEmbedding], options))[0]!;
}

/** Gradients of `patchEmbed`'s four inputs for the upstream gradient dy of its tokens. */
export async function patchEmbedBackward(gpu: Gpu, pixels: Tensor, weight: Tensor, dy: Tensor, options: PatchEmbedOptions): Promise<{ pixels: Tensor; weight: Tensor; classEmbedding: Tensor; positionEmbedding: Tensor }> {
  const [dPixels, dWeight, dClass, dPosition] = await runKernel(gpu, patchEmbedBackwardKernel, [pixels, weight, dy], options);
  return { pixels: dPixels!, weight: dWeight!, classEmbedding: dClass!, positionEmbedding: dPosition! };
}

// ---- CPU reference (for tests only): float64, the convolution written out ----

export function patchEmbedReference(
  pixels: ArrayLike<number>,
  [batch, channels, height, width]: readonly number[],
  weight: ArrayLike<number>,
  classEmbedding: ArrayLike<number>,
  positionEmbedding: ArrayLike<number>,
  patchSize: number,
): Float64Array {
  const [B, C, H, W, p, D] = [batch!, channels!, height!, width!, patchSize, classEmbedding.length];
  const gh = H / p;
  const gw = W / p;
  const tokens = 1 + gh * gw;
  const out = new Float64Array(B * tokens * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < tokens; t++) {
      for (let d = 0; d < D; d++) {
        let v = classEmbedding[d]!;
        if (t > 0) {
          const [py, px] = [Math.floor((t - 1) / gw), (t - 1) % gw];
          v = 0;
          for (let c = 0; c < C; c++) {
            for (let ky = 0; ky < p; ky++) {
              for (let kx = 0; kx < p; kx++) {
                const pixel = pixels[((b * C + c) * H + py * p + ky) * W + px * p + kx]!;
                v += pixel * weight[((d * C + c) * p + ky) * p + kx]!;
              }
            }
          }
        }
        out[(b * tokens + t) * D + d] = v + positionEmbedding[t * D + d]!;
      }
    }
  }
  return out;
}

/** Gradients of `patchEmbedReference`'s inputs for dy [B, tokens, D], from the chain rule per term. */
export function patchEmbedBackwardReference(
  pixels: ArrayLike<number>,
  [batch, channels, height, width]: readonly number[],
  weight: ArrayLike<number>,
  dy: ArrayLike<number>,
  patchSize: number,
): { pixels: Float64Array; weight: Float64Array; classEmbedding: Float64Array; positionEmbedding: Float64Array } {
  const [B, C, H, W, p] = [batch!, channels!, height!, width!, patchSize];
  const gw = W / p;
  const tokens = 1 + (H / p) * gw;
  const D = dy.length / (B * tokens);
  const g = { pixels: new Float64Array(B * C * H * W), weight: new Float64Array(D * C * p * p), classEmbedding: new Float64Array(D), positionEmbedding: new Float64Array(tokens * D) };
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < tokens; t++) {
      for (let d = 0; d < D; d++) {
        const up = dy[(b * tokens + t) * D + d]!;
        g.positionEmbedding[t * D + d]! += up;
        if (t === 0) {
          g.classEmbedding[d]! += up;
          continue;
        }
        const [py, px] = [Math.floor((t - 1) / gw), (t - 1) % gw];
        for (let c = 0; c < C; c++) {
          for (let ky = 0; ky < p; ky++) {
            for (let kx = 0; kx < p; kx++) {
              const at = ((b * C + c) * H + py * p + ky) * W + px * p + kx;
              const wAt = ((d * C + c) * p + ky) * p + kx;
              g.pixels[at]! += up * weight[wAt]!;
              g.weight[wAt]! += up * pixels[at]!;
            }
          }
        }
      }
    }
  }
  return g;
}

import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { shapeString, sizeOf } from '../dtype.js';
import { Tensor } from '../tensor.js';
import { checkBindable, grid1d, specialize, splitUnits, uniforms, type Kernel } from './program.js';
import { infosOf, runKernel } from './runtime.js';
import roiAlignWgsl from '../../shaders/roiAlign.wgsl';

export interface RoiAlignOptions {
  /** Output bins [height, width] (a number for square). */
  outputSize: number | readonly [number, number];
  /** Image → feature coordinates factor (1 / stride). Default 1. */
  spatialScale?: number;
  /**
   * Samples per bin side; <= 0 means adaptive: ceil(roi size / bins), as torchvision, at most
   * ROI_ALIGN_MAX_SAMPLES. Default -1.
   */
  samplingRatio?: number;
  /** Pixel-center alignment (shift by -0.5, no RoI size clamp). Default false, as torchvision. */
  aligned?: boolean;
  /** 'nchw' [N, C, H, W] (default) or 'nhwc' [N, H, W, C] (a ViT's token grid, no transpose). */
  layout?: 'nchw' | 'nhwc';
}

const NAME = 'roiAlign';
/**
 * Most adaptive samples per bin axis. torchvision samples ceil(roi / bins) per axis, which is
 * unbounded: a box of 1e9 feature pixels would loop ~1e16 times per output. Up to 64 · bins
 * feature pixels per side (448 at 7×7; 64 with one bin, wider than any ViT grid here: OWL-ViT
 * B/16 at 960 px has 60) the grid is torchvision's; larger boxes average 64 × 64 evenly spaced
 * samples per bin. The shader also skips the samples that fall off the map (torchvision counts
 * them as zeros, and so do we), so a huge box costs what its part on the map costs.
 */
export const ROI_ALIGN_MAX_SAMPLES = 64;
const WG = 256;
/**
 * Channels per invocation (the shader's 4 · E), which share one computation of each sample's taps
 * and weights. On lavapipe, 500 boxes on OWL-ViT's 24x24x768 NHWC grid → 7x7 (sampling 2): 1 per
 * invocation ~0.8 s, 4 ~0.38 s, 16 ~0.24 s (with vec4 loads), 8 and 32 slower than 16.
 */
const CHANNELS = 16;

function outputHW(o: RoiAlignOptions): [number, number] {
  const s = o.outputSize;
  return typeof s === 'number' ? [s, s] : [s[0], s[1]];
}

/** Feature dims as [N, C, H, W] whatever the layout. */
function dims(shape: readonly number[], layout: RoiAlignOptions['layout']): [number, number, number, number] {
  const [a, b, c, d] = shape as [number, number, number, number];
  return layout === 'nhwc' ? [a, d, b, c] : [a, b, c, d];
}

/**
 * torchvision.ops.roi_align. Inputs: features [N, C, H, W] or [N, H, W, C] (options.layout, f32 or
 * f16 storage), boxes [K, 5] f32 rows (batch index, x1, y1, x2, y2) in image coordinates.
 * Output [K, C, outH, outW] in the features' dtype, for either layout.
 */
export const roiAlignKernel: Kernel<RoiAlignOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o, NAME, 'missing options');
    const [features, boxes] = inputs;
    check(inputs.length === 2 && features && boxes, NAME, `expected 2 inputs (features, boxes), got ${inputs.length}`);
    const layout = o.layout ?? 'nchw';
    check(layout === 'nchw' || layout === 'nhwc', NAME, `layout must be 'nchw' or 'nhwc', got ${JSON.stringify(o.layout)}`);
    check(features.dtype === 'f32' || features.dtype === 'f16', NAME, `features must be f32 or f16, got ${features.dtype}`);
    const want = layout === 'nhwc' ? '[N, H, W, C]' : '[N, C, H, W]';
    check(features.shape.length === 4, NAME, () => `features of shape ${shapeString(features.shape)} must be ${want} (layout '${layout}')`);
    const [n, c, h, w] = dims(features.shape, layout);
    check(n > 0 && h > 0 && w > 0, NAME, () => `features of shape ${shapeString(features.shape)} need N, H and W >= 1 (layout '${layout}', ${want})`);
    check(boxes.dtype === 'f32', NAME, `boxes must be f32, got ${boxes.dtype}`);
    check(boxes.shape.length === 2 && boxes.shape[1] === 5, NAME, () => `boxes of shape ${shapeString(boxes.shape)} must be [K, 5] (batch index, x1, y1, x2, y2)`);
    const size = o.outputSize;
    const [oh, ow] = outputHW(o);
    check(
      (typeof size === 'number' || (Array.isArray(size) && size.length === 2)) && [oh, ow].every((v) => Number.isInteger(v) && v > 0),
      NAME,
      () => `outputSize must be a positive integer or [height, width] of positive integers, got ${JSON.stringify(size)}`,
    );
    const scale = o.spatialScale ?? 1;
    check(Number.isFinite(scale) && scale > 0, NAME, `spatialScale must be a positive finite number, got ${scale}`);
    const ratio = o.samplingRatio ?? -1;
    check(Number.isInteger(ratio), NAME, `samplingRatio must be an integer (<= 0 for adaptive), got ${ratio}`);
    return [{ shape: [boxes.shape[0]!, c, oh, ow], dtype: features.dtype }];
  },
  plan(gpu, inputs, outputs, o) {
    const features = inputs[0]!;
    const out = outputs[0]!;
    const layout = o.layout ?? 'nchw';
    const [n, c, h, w] = dims(features.shape, layout);
    const [oh, ow] = outputHW(o);
    const count = sizeOf(out.shape);
    const k = out.shape[0]!;
    const entryPoint = layout === 'nhwc' && c % 4 === 0 ? 'main_vec4' : 'main';
    const ratio = o.samplingRatio ?? -1;
    const bytesPer = features.dtype === 'f16' ? 2 : 4;
    checkBindable(gpu, NAME, 'features', features, 'roiAlign splits boxes, not the feature map: call it per image (one image of features with its boxes)');
    const program = {
      name: `${NAME}.${layout}`,
      entryPoint,
      key: features.dtype,
      code: specialize(roiAlignWgsl, features.dtype),
      constants: { NHWC: layout === 'nhwc' ? 1 : 0, WG, MAX_SAMPLES: ROI_ALIGN_MAX_SAMPLES },
      bindings: ['read', 'read', 'write'] as const,
    };
    // Chunks of boxes, each with its rows of boxes and of the output, under the binding limit.
    const chunks = splitUnits(gpu, NAME, 'boxes', k, [
      { tensor: 1, name: 'boxes', info: inputs[1]!, unitBytes: 20 },
      { tensor: 2, name: 'output', info: out, unitBytes: c * oh * ow * bytesPer },
    ]);
    const dispatches = chunks.map((chunk) => {
      const invocations = chunk.count * Math.ceil(c / CHANNELS) * oh * ow;
      return {
        program,
        tensors: [0, chunk.bind(1), chunk.bind(2)],
        uniforms: uniforms(invocations, n, c, h, w, oh, ow, o.aligned ? 1 : 0, { f32: o.spatialScale ?? 1 }, { i32: ratio }),
        workgroups: grid1d(gpu, invocations, WG),
      };
    });
    // Nominal: 4 taps (2 flops each) per sample, at the given ratio or 2×2 samples when adaptive.
    const samples = ratio > 0 ? ratio * ratio : 4;
    return {
      dispatches: count === 0 ? [] : dispatches,
      flops: count * samples * 8,
      bytes: count * bytesPer + k * 20 + Math.min(sizeOf(features.shape), count * samples * 4) * bytesPer,
    };
  },
};

export interface RoiAlignBackwardOptions extends RoiAlignOptions {
  /** The forward's features shape, in its layout ([N, C, H, W] or [N, H, W, C]): the gradient's shape. */
  featuresShape: readonly number[];
}

/**
 * The backward of `roiAlignKernel` into the feature map (torchvision's roi_align backward). Inputs
 * [dy [K, C, outH, outW] f32/f16, boxes [K, 5] f32]; output d features of `featuresShape` in the
 * options' layout. No float atomics: each invocation gathers the gradient of 16 channels of one
 * feature pixel from the samples of every box that touch it (see shaders/roiAlign.wgsl).
 */
export const roiAlignBackwardKernel: Kernel<RoiAlignBackwardOptions> = {
  name: 'roiAlignBackward',
  outputs(inputs, o) {
    const op = 'roiAlignBackward';
    check(o && Array.isArray(o.featuresShape), op, 'options.featuresShape must be the forward features shape');
    const [dy, boxes] = inputs;
    check(inputs.length === 2 && dy && boxes, op, `expected 2 inputs (dy, boxes), got ${inputs.length}`);
    const [y] = roiAlignKernel.outputs([{ shape: o.featuresShape, dtype: dy.dtype }, boxes], o);
    check(shapeString(dy.shape) === shapeString(y!.shape), op, () => `dy must be ${shapeString(y!.shape)} (the forward output's shape), got ${shapeString(dy.shape)}`);
    return [{ shape: [...o.featuresShape], dtype: dy.dtype }];
  },
  plan(gpu, inputs, outputs, o) {
    const op = 'roiAlignBackward';
    const dy = inputs[0]!;
    const layout = o.layout ?? 'nchw';
    const [n, c, h, w] = dims(o.featuresShape, layout);
    const [oh, ow] = outputHW(o);
    const k = inputs[1]!.shape[0]!;
    const invocations = n * h * w * Math.ceil(c / CHANNELS);
    const ratio = o.samplingRatio ?? -1;
    const bytesPer = dy.dtype === 'f16' ? 2 : 4;
    checkBindable(gpu, op, 'the features gradient', outputs[0]!, `${op} splits boxes, not the feature map: call it per image (one image's gradient with that image's boxes)`);
    const program = {
      name: `roiAlignBackward.${layout}`,
      entryPoint: 'backward',
      key: dy.dtype,
      code: specialize(roiAlignWgsl, dy.dtype),
      constants: { NHWC: layout === 'nhwc' ? 1 : 0, WG, MAX_SAMPLES: ROI_ALIGN_MAX_SAMPLES },
      bindings: ['read', 'read', 'read', 'write'] as const,
    };
    // Chunks of boxes with their rows of dy under the binding limit; every chunk gathers over its
    // own boxes, and those after the first add to what the gradient already holds.
    const chunks = splitUnits(gpu, op, 'boxes', k, [
      { tensor: 0, name: 'dy', info: dy, unitBytes: c * oh * ow * bytesPer },
      { tensor: 1, name: 'boxes', info: inputs[1]!, unitBytes: 20 },
    ]);
    const dispatches = chunks.map((chunk, i) => ({
      program,
      // Binding 1 (the forward's features) is unused: dy fills it.
      tensors: [chunk.bind(0), chunk.bind(1), chunk.bind(0), 2],
      uniforms: uniforms(invocations, n, c, h, w, oh, ow, o.aligned ? 1 : 0, { f32: o.spatialScale ?? 1 }, { i32: ratio }, chunk.count, i > 0 ? 1 : 0),
      workgroups: grid1d(gpu, invocations, WG),
    }));
    return { dispatches: invocations === 0 ? [] : dispatches, bytes: (sizeOf(outputs[0]!.shape) * chunks.length + sizeOf(dy.shape)) * bytesPer + k * 20 };
  },
};

/** Throws before dispatch unless every box has an integer batch index in [0, n) and finite coordinates. */
function validateRoiBoxes(data: ArrayLike<number>, n: number): void {
  for (let i = 0; i * 5 < data.length; i++) {
    const b = data[5 * i]!;
    check(Number.isInteger(b) && b >= 0 && b < n, NAME, () => `box ${i}: batch index ${b} must be an integer in [0, ${n - 1}] (features hold ${n} images)`);
    for (let j = 1; j < 5; j++) {
      check(Number.isFinite(data[5 * i + j]), NAME, () => `box ${i}: coordinate ${j - 1} is ${data[5 * i + j]}, expected a finite number`);
    }
  }
}

/**
 * RoIAlign (torchvision.ops.roi_align semantics) → [K, C, outH, outW].
 * `boxes` is a [K, 5] f32 Tensor or host numbers (K·5 of them, rows (batch, x1, y1, x2, y2)).
 * Box values are validated on the host before dispatch (a Tensor is read back for that: it is small).
 */
export async function roiAlign(gpu: Gpu, features: Tensor, boxes: Tensor | ArrayLike<number>, options: RoiAlignOptions): Promise<Tensor> {
  if (boxes instanceof Tensor) {
    roiAlignKernel.outputs(infosOf([features, boxes]), options);
    validateRoiBoxes(await boxes.read(), dims(features.shape, options.layout)[0]);
    return (await runKernel(gpu, roiAlignKernel, [features, boxes], options))[0]!;
  }
  check(boxes.length % 5 === 0, NAME, () => `boxes must hold rows of 5 numbers (batch, x1, y1, x2, y2), got ${boxes.length} numbers`);
  const shape = [boxes.length / 5, 5];
  roiAlignKernel.outputs([{ shape: features.shape, dtype: features.dtype }, { shape, dtype: 'f32' }], options);
  validateRoiBoxes(boxes, dims(features.shape, options.layout)[0]);
  const t = Tensor.from(gpu, Float32Array.from(boxes), shape);
  try {
    return (await runKernel(gpu, roiAlignKernel, [features, t], options))[0]!;
  } finally {
    t.dispose();
  }
}

/**
 * d features of `roiAlign` for the upstream gradient dy [K, C, outH, outW]; `featuresShape` is the
 * forward features' shape (in `options.layout`). Boxes as for `roiAlign`, validated on the host.
 */
export async function roiAlignBackward(gpu: Gpu, dy: Tensor, boxes: Tensor, options: RoiAlignBackwardOptions): Promise<Tensor> {
  roiAlignBackwardKernel.outputs(infosOf([dy, boxes]), options);
  validateRoiBoxes(await boxes.read(), dims(options.featuresShape, options.layout)[0]);
  return (await runKernel(gpu, roiAlignBackwardKernel, [dy, boxes], options))[0]!;
}

// ---- CPU reference (tests only): torchvision's algorithm in float64 (with our sampling cap), NCHW features ----

/** Samples per bin along one axis: the ratio, or torchvision's adaptive count under our cap. */
const sampleGrid = (roi: number, bins: number, ratio: number) => (ratio > 0 ? ratio : Math.min(Math.ceil(roi / bins), ROI_ALIGN_MAX_SAMPLES));

export function roiAlignReference(
  features: ArrayLike<number>,
  shape: readonly [number, number, number, number],
  boxes: ArrayLike<number>,
  o: RoiAlignOptions,
): Float64Array {
  const [, c, height, width] = shape;
  const [oh, ow] = outputHW(o);
  const scale = o.spatialScale ?? 1;
  const ratio = o.samplingRatio ?? -1;
  const k = boxes.length / 5;
  const out = new Float64Array(k * c * oh * ow);
  const at = (b: number, ch: number, y: number, x: number) => features[((b * c + ch) * height + y) * width + x]!;
  for (let r = 0; r < k; r++) {
    const b = Math.trunc(boxes[5 * r]!);
    const offset = o.aligned ? 0.5 : 0;
    const [x1, y1, x2, y2] = [1, 2, 3, 4].map((j) => boxes[5 * r + j]! * scale - offset) as [number, number, number, number];
    const roiW = o.aligned ? x2 - x1 : Math.max(x2 - x1, 1);
    const roiH = o.aligned ? y2 - y1 : Math.max(y2 - y1, 1);
    const binH = roiH / oh;
    const binW = roiW / ow;
    const [gridH, gridW] = [sampleGrid(roiH, oh, ratio), sampleGrid(roiW, ow, ratio)];
    const count = Math.max(gridH * gridW, 1);
    for (let ch = 0; ch < c; ch++) {
      for (let ph = 0; ph < oh; ph++) {
        for (let pw = 0; pw < ow; pw++) {
          let sum = 0;
          for (let iy = 0; iy < gridH; iy++) {
            for (let ix = 0; ix < gridW; ix++) {
              let y = y1 + ph * binH + ((iy + 0.5) * binH) / gridH;
              let x = x1 + pw * binW + ((ix + 0.5) * binW) / gridW;
              if (y < -1 || y > height || x < -1 || x > width) continue;
              y = Math.max(y, 0);
              x = Math.max(x, 0);
              let yl = Math.floor(y);
              let xl = Math.floor(x);
              let yh = yl + 1;
              let xh = xl + 1;
              if (yl >= height - 1) [yl, yh, y] = [height - 1, height - 1, height - 1];
              if (xl >= width - 1) [xl, xh, x] = [width - 1, width - 1, width - 1];
              const ly = y - yl;
              const lx = x - xl;
              sum +=
                (1 - ly) * (1 - lx) * at(b, ch, yl, xl) + (1 - ly) * lx * at(b, ch, yl, xh) + ly * (1 - lx) * at(b, ch, yh, xl) + ly * lx * at(b, ch, yh, xh);
            }
          }
          out[((r * c + ch) * oh + ph) * ow + pw] = sum / count;
        }
      }
    }
  }
  return out;
}

/**
 * torchvision's roi_align backward in float64 on NCHW features: each output's gradient times a
 * sample's bilinear weights, divided by the sample count, scattered into the sample's 4 taps.
 */
export function roiAlignBackwardReference(
  dy: ArrayLike<number>,
  shape: readonly [number, number, number, number],
  boxes: ArrayLike<number>,
  o: RoiAlignOptions,
): Float64Array {
  const [n, c, height, width] = shape;
  const [oh, ow] = outputHW(o);
  const scale = o.spatialScale ?? 1;
  const ratio = o.samplingRatio ?? -1;
  const grad = new Float64Array(n * c * height * width);
  // One axis of a sample as torchvision's bilinear_interpolate_gradient: [low, high, weight low, weight high], or none.
  const axis = (v: number, size: number): [number, number, number, number] | undefined => {
    if (v < -1 || v > size) return undefined;
    v = Math.max(v, 0);
    let low = Math.floor(v);
    let high = low + 1;
    if (low >= size - 1) [low, high, v] = [size - 1, size - 1, size - 1];
    return [low, high, 1 - (v - low), v - low];
  };
  for (let r = 0; r * 5 < boxes.length; r++) {
    const b = Math.trunc(boxes[5 * r]!);
    const offset = o.aligned ? 0.5 : 0;
    const [x1, y1, x2, y2] = [1, 2, 3, 4].map((j) => boxes[5 * r + j]! * scale - offset) as [number, number, number, number];
    const roiW = o.aligned ? x2 - x1 : Math.max(x2 - x1, 1);
    const roiH = o.aligned ? y2 - y1 : Math.max(y2 - y1, 1);
    const [binH, binW] = [roiH / oh, roiW / ow];
    const [gridH, gridW] = [sampleGrid(roiH, oh, ratio), sampleGrid(roiW, ow, ratio)];
    const count = Math.max(gridH * gridW, 1);
    for (let ch = 0; ch < c; ch++) {
      const plane = (b * c + ch) * height * width;
      for (let ph = 0; ph < oh; ph++) {
        for (let pw = 0; pw < ow; pw++) {
          const g = dy[((r * c + ch) * oh + ph) * ow + pw]! / count;
          for (let iy = 0; iy < gridH; iy++) {
            const sy = axis(y1 + ph * binH + ((iy + 0.5) * binH) / gridH, height);
            for (let ix = 0; ix < gridW; ix++) {
              const sx = axis(x1 + pw * binW + ((ix + 0.5) * binW) / gridW, width);
              if (!sy || !sx) continue;
              for (const [y, wy] of [[sy[0], sy[2]], [sy[1], sy[3]]] as const) {
                for (const [x, wx] of [[sx[0], sx[2]], [sx[1], sx[3]]] as const) grad[plane + y * width + x]! += g * wy * wx;
              }
            }
          }
        }
      }
    }
  }
  return grad;
}

import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import type { Tensor } from '../tensor.js';
import { BYTES_PER_ELEMENT, shapeString } from '../dtype.js';
import { bindingBytes, bindingLimit, checkBindable, elementSlice, grid1d, sliceCapacity, specialize, uniforms, type Dispatch, type Kernel, type Program, type TensorInfo, type TensorSlice } from './program.js';
import { runKernel } from './runtime.js';
import { elementwiseReference } from './elementwise.js';
import similarityWgsl from '../../shaders/regionWordSimilarity.wgsl';

/**
 * Plain-data options of the kernel. Inputs, in order: regions [B, R, D], words [B or 1, Q, D],
 * then for 'owl' shift and scale ([B, R] or [B, R, 1]), then with `queryMask` the mask [B or 1, Q]
 * (i32 or u32, 0 = padded query).
 */
export interface RegionWordSimilarityOptions {
  /** 'clip': exp(logitScale) · cos. 'owl': (cos + shift) · (elu(scale) + 1). */
  mode: 'clip' | 'owl';
  /** CLIP's logit scale as stored in checkpoints (the log of the multiplier). */
  logitScale?: number;
  /** A query mask input follows; padded queries get -1e6 (HF OwlViTClassPredictionHead). */
  queryMask?: boolean;
  /** Also return each region's k best queries (values and indices), 1 ≤ k ≤ min(Q, 64). */
  topK?: number;
}

const NAME = 'regionWordSimilarity';
const TILE = 4;
const WGX = 8;
const WGY = 8;
/** Largest supported topK (a per-invocation array in the shader). */
export const MAX_TOP_K = 64;

function checkFloat(t: TensorInfo | undefined, name: string, dtype?: string): asserts t {
  check(t, NAME, `missing input ${name}`);
  check(t.dtype === 'f32' || t.dtype === 'f16', NAME, `${name} must be f32 or f16, got ${t.dtype}`);
  check(dtype === undefined || t.dtype === dtype, NAME, `${name} must be ${dtype} like regions, got ${t.dtype}`);
}

/**
 * Region–word similarity logits [B, R, Q] (f32 whatever the input dtype: -1e6 does not fit f16),
 * plus topValues [B, R, k] (f32) and topIndices [B, R, k] (i32) when `topK` is set.
 */
export const regionWordSimilarityKernel: Kernel<RegionWordSimilarityOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && (o.mode === 'clip' || o.mode === 'owl'), NAME, `mode must be 'clip' or 'owl', got ${JSON.stringify(o?.mode)}`);
    const owl = o.mode === 'owl';
    const want = 2 + (owl ? 2 : 0) + (o.queryMask ? 1 : 0);
    check(inputs.length === want, NAME, `expected ${want} inputs (regions, words${owl ? ', shift, scale' : ''}${o.queryMask ? ', queryMask' : ''}), got ${inputs.length}`);
    const [regions, words] = inputs;
    checkFloat(regions, 'regions');
    check(regions.shape.length === 3, NAME, () => `regions of shape ${shapeString(regions.shape)} must be [B, R, D]`);
    const [b, r, d] = regions.shape as [number, number, number];
    check(d > 0, NAME, 'regions must have D >= 1');
    checkFloat(words, 'words', regions.dtype);
    check(
      words.shape.length === 3 && (words.shape[0] === b || words.shape[0] === 1) && words.shape[2] === d,
      NAME,
      () => `words of shape ${shapeString(words.shape)} must be [${b} or 1, Q, ${d}] to match regions ${shapeString(regions.shape)}`,
    );
    const q = words.shape[1]!;
    if (owl) {
      for (const [name, t] of [['shift', inputs[2]], ['scale', inputs[3]]] as const) {
        checkFloat(t, name, regions.dtype);
        check(
          t.shape[0] === b && t.shape[1] === r && (t.shape.length === 2 || (t.shape.length === 3 && t.shape[2] === 1)),
          NAME,
          () => `${name} of shape ${shapeString(t.shape)} must be [${b}, ${r}] or [${b}, ${r}, 1] (one per region)`,
        );
      }
    } else {
      check(Number.isFinite(o.logitScale), NAME, `logitScale must be a finite number (the log of the multiplier), got ${o.logitScale}`);
      check(Number.isFinite(Math.exp(o.logitScale!)), NAME, `exp(logitScale) overflows for logitScale ${o.logitScale}`);
    }
    if (o.queryMask) {
      const m = inputs[want - 1]!;
      check(m.dtype === 'i32' || m.dtype === 'u32', NAME, `queryMask must be i32 or u32 (0 = padded), got ${m.dtype}`);
      check(
        m.shape.length === 2 && (m.shape[0] === b || m.shape[0] === 1) && m.shape[1] === q,
        NAME,
        () => `queryMask of shape ${shapeString(m.shape)} must be [${b} or 1, ${q}]`,
      );
    }
    const outputs: TensorInfo[] = [{ shape: [b, r, q], dtype: 'f32' }];
    if (o.topK !== undefined) {
      const k = o.topK;
      check(Number.isInteger(k) && k >= 1 && k <= Math.min(q, MAX_TOP_K), NAME, `topK must be an integer in [1, ${Math.min(q, MAX_TOP_K)}] (Q = ${q}, at most ${MAX_TOP_K}), got ${k}`);
      outputs.push({ shape: [b, r, k], dtype: 'f32' }, { shape: [b, r, k], dtype: 'i32' });
    }
    return outputs;
  },
  plan(gpu, inputs, outputs, o) {
    const regions = inputs[0]!;
    const words = inputs[1]!;
    const [b, r, d] = regions.shape as [number, number, number];
    const q = words.shape[1]!;
    const owl = o.mode === 'owl';
    const n = inputs.length; // outputs start at index n in [...inputs, ...outputs]
    const maskIndex = o.queryMask ? n - 1 : 0;
    const k = o.topK ?? 0;
    const code = specialize(similarityWgsl, regions.dtype);
    const constants = { OWL: owl ? 1 : 0, HAS_MASK: o.queryMask ? 1 : 0, WGX, WGY };
    const key = regions.dtype;
    const shape = { b, r, q, d, wordsShared: words.shape[0] === 1, maskShared: o.queryMask === true && inputs[maskIndex]!.shape[0] === 1, k, multiplier: owl ? 1 : Math.exp(o.logitScale!) };
    if (o.queryMask) checkBindable(gpu, NAME, 'queryMask', inputs[maskIndex]!, `${NAME} splits regions and queries, not the mask: call it on fewer queries`);
    const main: Program = { name: `${NAME}.${o.mode}`, key, code, constants, bindings: ['read', 'read', 'read', 'read', 'read', 'write'] };
    const topK: Program = { name: `${NAME}.top_k`, key, code, entryPoint: 'top_k', constants, bindings: ['read', 'read', 'read', 'read', 'read', 'write', 'write', 'write'] };
    const dispatches: Dispatch[] = [];
    for (const chunk of b * r * q > 0 ? chunks(gpu, inputs, outputs, owl) : []) {
      // This chunk's rows [first, end) of regions, shift, scale, logits and the top-k outputs, and
      // its queries' rows of words (a slice of one image's words when they are per image).
      const first = chunk.b[0] * r + chunk.r[0];
      const end = (chunk.b[1] - 1) * r + chunk.r[1];
      const reg = elementSlice(gpu, 0, regions, first * d, end * d);
      const rows = owl ? [2, 3].map((t) => elementSlice(gpu, t, inputs[t]!, first, end)) : [reg, reg];
      const logits = elementSlice(gpu, n, outputs[0]!, first * q, end * q);
      const top = k > 0 ? [n + 1, n + 2].map((t) => elementSlice(gpu, t, outputs[t - n]!, first * k, end * k)) : [];
      const mask = o.queryMask ? maskIndex : reg.bind;
      const wordRow = (image: number, query: number) => ((shape.wordsShared ? 0 : image) * q + query) * d;
      const bases = (w: number) => [reg.base, w, rows[0]!.base, logits.base, top[0]?.base ?? 0];
      let wordsBind: number | TensorSlice = 1;
      for (const queries of chunk.q) {
        const w = elementSlice(gpu, 1, words, wordRow(chunk.b[0], queries[0]), wordRow(chunk.b[1] - 1, queries[1]));
        wordsBind = w.bind;
        dispatches.push({
          program: main,
          tensors: [reg.bind, w.bind, rows[0]!.bind, rows[1]!.bind, mask, logits.bind],
          uniforms: params(shape, { ...chunk, q: queries }, bases(w.base)),
          workgroups: [Math.ceil(Math.ceil((queries[1] - queries[0]) / TILE) / WGX), Math.ceil(Math.ceil((chunk.r[1] - chunk.r[0]) / TILE) / WGY), chunk.b[1] - chunk.b[0]],
        });
      }
      // After every query chunk of these rows: top_k reads whole rows of logits.
      if (k > 0) {
        dispatches.push({
          program: topK,
          tensors: [reg.bind, wordsBind, rows[0]!.bind, rows[1]!.bind, mask, logits.bind, top[0]!.bind, top[1]!.bind],
          uniforms: params(shape, { ...chunk, q: [0, q] }, bases(0)),
          workgroups: grid1d(gpu, (chunk.b[1] - chunk.b[0]) * (chunk.r[1] - chunk.r[0]), 64),
        });
      }
    }
    const bytesPer = regions.dtype === 'f16' ? 2 : 4;
    return {
      dispatches,
      flops: 2 * b * r * q * d + 4 * b * r * q,
      bytes: (b * r * d + words.shape[0]! * q * d) * bytesPer + 4 * b * r * q * (k > 0 ? 2 : 1) + 8 * b * r * k,
    };
  },
};

/** Sizes and scalars of a call, as the shader's Params need them. */
interface CallShape {
  b: number;
  r: number;
  q: number;
  d: number;
  wordsShared: boolean;
  maskShared: boolean;
  k: number;
  multiplier: number;
}

/** Images [b0, b1), regions [r0, r1) of each and ranges of queries: one chunk of a split call. */
interface Chunk {
  b: readonly [number, number];
  r: readonly [number, number];
  q: readonly (readonly [number, number])[];
}

/**
 * The shader's Params for one chunk (`q` a single range of queries), with the first element bound
 * of regions, words, shift / scale, logits and the top-k outputs (`bases`, in that order).
 */
function params(s: CallShape, chunk: { b: readonly [number, number]; r: readonly [number, number]; q: readonly [number, number] }, bases: readonly number[]): ArrayBuffer {
  return uniforms(s.b, s.r, s.q, s.d, s.wordsShared ? 0 : s.q * s.d, s.maskShared ? 0 : s.q, s.k, { f32: s.multiplier }, ...chunk.b, ...chunk.r, ...chunk.q, ...bases);
}

/**
 * How a call is split at the binding limit: one chunk of everything when every tensor fits a
 * binding. Otherwise rows of regions (with their shift, scale, logits and top-k rows; whole images
 * when one image's rows fit) by whatever fits, and, when words do not fit, ranges of queries; words
 * per image (not shared) then bind one image's queries, so such chunks hold one image.
 */
function chunks(gpu: Gpu, inputs: readonly TensorInfo[], outputs: readonly TensorInfo[], owl: boolean): Chunk[] {
  const [regions, words] = inputs as [TensorInfo, TensorInfo];
  const [b, r, d] = regions.shape as [number, number, number];
  const [bw, q] = words.shape as [number, number];
  const limit = bindingLimit(gpu);
  const room = sliceCapacity(gpu);
  const byRow = [regions, ...(owl ? inputs.slice(2, 4) : []), ...outputs];
  const rowsFit = byRow.every((t) => bindingBytes(t) <= limit);
  const wordsFit = bindingBytes(words) <= limit;
  const rowBytes = Math.max(...byRow.map((t) => (t.shape[2] ?? 1) * BYTES_PER_ELEMENT[t.dtype]));
  const wordBytes = d * BYTES_PER_ELEMENT[words.dtype];
  const tooWide = (what: string, bytes: number) =>
    `one ${what} (${bytes} bytes) does not fit the device's maxStorageBufferBindingSize of ${limit} bytes (less ${limit - room} for alignment), so splitting by regions and queries cannot help: use fewer queries or a smaller D`;
  check(rowsFit || rowBytes <= room, NAME, () => tooWide('row of regions or logits', rowBytes));
  check(wordsFit || wordBytes <= room, NAME, () => tooWide('query of words', wordBytes));
  const rowsPer = rowsFit ? b * r : Math.floor(room / rowBytes);
  const queriesPer = wordsFit ? q : Math.floor(room / wordBytes);
  const queries: [number, number][] = [];
  for (let q0 = 0; q0 < q; q0 += queriesPer) queries.push([q0, Math.min(q, q0 + queriesPer)]);
  const imagesPer = !wordsFit && bw > 1 ? 1 : Math.max(1, Math.floor(rowsPer / r));
  const out: Chunk[] = [];
  for (let b0 = 0; b0 < b; b0 += imagesPer) {
    if (r <= rowsPer) out.push({ b: [b0, Math.min(b, b0 + imagesPer)], r: [0, r], q: queries });
    else for (let r0 = 0; r0 < r; r0 += rowsPer) out.push({ b: [b0, b0 + 1], r: [r0, Math.min(r, r0 + rowsPer)], q: queries });
  }
  return out;
}

/**
 * The backward of `regionWordSimilarityKernel`'s logits (options as the forward's; `topK` is not
 * differentiable and must be absent). Inputs: the forward's inputs, then dy [B, R, Q] f32 (the
 * gradient of the logits). Outputs [dRegions, dWords] (words' own shape: shared words [1, Q, D]
 * collect from every image), then for 'owl' [dShift, dScale] in shift's and scale's shapes. A
 * masked query's logit is a constant: it passes no gradient. CLIP's logitScale is an option, not a
 * tensor, so it gets none.
 */
export const regionWordSimilarityBackwardKernel: Kernel<RegionWordSimilarityOptions> = {
  name: 'regionWordSimilarityBackward',
  outputs(inputs, o) {
    const op = 'regionWordSimilarityBackward';
    check(o?.topK === undefined, op, 'topK is not differentiable: differentiate the logits (omit topK)');
    check(inputs.length >= 1, op, 'expected the forward inputs and dy');
    const forward = inputs.slice(0, -1);
    const dy = inputs[inputs.length - 1]!;
    const [logits] = regionWordSimilarityKernel.outputs(forward, o);
    check(dy.dtype === 'f32', op, `dy must be f32 (as the logits), got ${dy.dtype}`);
    check(shapeString(dy.shape) === shapeString(logits!.shape), op, () => `dy must be ${shapeString(logits!.shape)} (the logits' shape), got ${shapeString(dy.shape)}`);
    const grads = forward.slice(0, o.mode === 'owl' ? 4 : 2);
    return grads.map((t) => ({ shape: [...t.shape], dtype: forward[0]!.dtype }));
  },
  plan(gpu, inputs, outputs, o) {
    const [regions, words] = inputs as [TensorInfo, TensorInfo];
    const [b, r, d] = regions.shape as [number, number, number];
    const q = words.shape[1]!;
    const bw = words.shape[0]!;
    const owl = o.mode === 'owl';
    const n = inputs.length; // outputs start here; the scratch follows them
    const maskIndex = o.queryMask ? n - 2 : 0;
    const [dRegions, dWords, dShift, dScale] = [n, n + 1, n + 2, n + 3];
    const work = n + outputs.length;
    const shape = { b, r, q, d, wordsShared: bw === 1, maskShared: o.queryMask === true && inputs[maskIndex]!.shape[0] === 1, k: 0, multiplier: owl ? 1 : Math.exp(o.logitScale!) };
    const whole = params(shape, { b: [0, b], r: [0, r], q: [0, q] }, [0, 0, 0, 0, 0]);
    const code = specialize(similarityWgsl, regions.dtype);
    const reads = [0, 1, owl ? 2 : 0, owl ? 3 : 0, maskIndex, n - 1];
    const step = (entryPoint: string, count: number, out: number, out2: number): Dispatch => ({
      program: {
        name: `regionWordSimilarityBackward.${entryPoint}`,
        key: regions.dtype,
        code,
        entryPoint,
        constants: { OWL: owl ? 1 : 0, HAS_MASK: o.queryMask ? 1 : 0 },
        bindings: ['read', 'read', 'read', 'read', 'read', 'read', 'write', 'write', 'write'],
      },
      tensors: [...reads, work, out, out2],
      uniforms: whole,
      workgroups: grid1d(gpu, count, 64),
    });
    const pairs = b * r * q;
    const scratch: TensorInfo = { shape: [b * r + bw * q + 2 * pairs + b * r], dtype: 'f32' };
    // Not split: the words' gradients sum over every region and the regions' over every query.
    const advice = 'call it on fewer regions (or images) at a time and add up the words\' gradients of the calls';
    for (const [name, t] of [['regions', regions], ['words', words], ['dy', inputs[n - 1]!], ['its scratch (8 bytes per region-query pair)', scratch]] as const) {
      checkBindable(gpu, 'regionWordSimilarityBackward', name, t, advice);
    }
    const dispatches = [
      step('bw_norms', b * r + bw * q, dRegions, dWords),
      step('bw_pairs', pairs, dRegions, dWords),
      step('bw_region_sums', b * r, owl ? dShift : dRegions, owl ? dScale : dWords),
      step('bw_regions', b * r * d, dRegions, dWords),
      step('bw_words', bw * q * d, dWords, dRegions),
    ];
    return {
      dispatches: b * r * q * d > 0 ? dispatches : [],
      scratch: [scratch],
      flops: 8 * pairs * d,
      bytes: 4 * (b * r * d + bw * q * d) * (regions.dtype === 'f16' ? 1 : 2) + 16 * pairs,
    };
  },
};

export interface RegionWordSimilarityArgs {
  /** CLIP style: logits = exp(logitScale) · cos (logitScale as stored in checkpoints). */
  logitScale?: number;
  /** OWL-ViT style, with `scale`: logits = (cos + shift) · (elu(scale) + 1); [B, R] or [B, R, 1]. */
  shift?: Tensor;
  scale?: Tensor;
  /** [B or 1, Q] i32/u32; 0 marks a padded query, whose logits become -1e6. */
  queryMask?: Tensor;
  /** Also return each region's k best queries (descending; ties to the lower index). */
  topK?: number;
}

export interface RegionWordSimilarityResult {
  /** [B, R, Q] f32. */
  logits: Tensor;
  /** [B, R, k] f32, with `topK`. */
  topValues?: Tensor;
  /** [B, R, k] i32 query indices, with `topK`. */
  topIndices?: Tensor;
}

/**
 * Cosine similarity of regions [B, R, D] and words [B or 1, Q, D] (rows divided by norm + 1e-6),
 * scaled CLIP style (`logitScale`) or OWL-ViT style (`shift` and `scale`): pass exactly one.
 */
export async function regionWordSimilarity(gpu: Gpu, regions: Tensor, words: Tensor, args: RegionWordSimilarityArgs): Promise<RegionWordSimilarityResult> {
  const owl = args.shift !== undefined || args.scale !== undefined;
  check(
    owl !== (args.logitScale !== undefined),
    NAME,
    'pass either logitScale (CLIP style) or shift and scale (OWL-ViT style), not both or neither',
  );
  check(!owl || (args.shift && args.scale), NAME, 'OWL-ViT style needs both shift and scale');
  const inputs = [regions, words, ...(owl ? [args.shift!, args.scale!] : []), ...(args.queryMask ? [args.queryMask] : [])];
  const [logits, topValues, topIndices] = await runKernel(gpu, regionWordSimilarityKernel, inputs, {
    mode: owl ? 'owl' : 'clip',
    logitScale: args.logitScale,
    queryMask: args.queryMask !== undefined,
    topK: args.topK,
  });
  return args.topK === undefined ? { logits: logits! } : { logits: logits!, topValues, topIndices };
}

export interface RegionWordSimilarityGradients {
  regions: Tensor;
  words: Tensor;
  /** With shift and scale (OWL-ViT style). */
  shift?: Tensor;
  scale?: Tensor;
}

/** Gradients of `regionWordSimilarity`'s logits for dy [B, R, Q] (f32); args as the forward's, without topK. */
export async function regionWordSimilarityBackward(gpu: Gpu, regions: Tensor, words: Tensor, dy: Tensor, args: Omit<RegionWordSimilarityArgs, 'topK'>): Promise<RegionWordSimilarityGradients> {
  const owl = args.shift !== undefined || args.scale !== undefined;
  check(owl !== (args.logitScale !== undefined), NAME, 'pass either logitScale (CLIP style) or shift and scale (OWL-ViT style), not both or neither');
  check(!owl || (args.shift && args.scale), NAME, 'OWL-ViT style needs both shift and scale');
  const inputs = [regions, words, ...(owl ? [args.shift!, args.scale!] : []), ...(args.queryMask ? [args.queryMask] : []), dy];
  const [dRegions, dWords, dShift, dScale] = await runKernel(gpu, regionWordSimilarityBackwardKernel, inputs, {
    mode: owl ? 'owl' : 'clip',
    logitScale: args.logitScale,
    queryMask: args.queryMask !== undefined,
  });
  return owl ? { regions: dRegions!, words: dWords!, shift: dShift!, scale: dScale! } : { regions: dRegions!, words: dWords! };
}

// ---- CPU reference (tests only): float64 ----

export interface RegionWordSimilarityReferenceArgs {
  logitScale?: number;
  shift?: ArrayLike<number>;
  scale?: ArrayLike<number>;
  /** [B or 1, Q] flattened; 0 = padded. */
  queryMask?: ArrayLike<number>;
}

/** logits [B, R, Q] flattened; words may have batch 1 (shared). */
export function regionWordSimilarityReference(
  regions: ArrayLike<number>,
  words: ArrayLike<number>,
  [b, r, q, d]: readonly [number, number, number, number],
  args: RegionWordSimilarityReferenceArgs,
): Float64Array {
  const normalized = (x: ArrayLike<number>, row: number) => {
    const v = Array.from({ length: d }, (_, j) => x[row * d + j]!);
    const norm = Math.sqrt(v.reduce((s, t) => s + t * t, 0)) + 1e-6;
    return v.map((t) => t / norm);
  };
  const sharedWords = words.length === q * d;
  const sharedMask = args.queryMask?.length === q;
  const out = new Float64Array(b * r * q);
  for (let bi = 0; bi < b; bi++) {
    const ws = Array.from({ length: q }, (_, j) => normalized(words, (sharedWords ? 0 : bi * q) + j));
    for (let ri = 0; ri < r; ri++) {
      const e = normalized(regions, bi * r + ri);
      for (let j = 0; j < q; j++) {
        const cos = e.reduce((s, t, k) => s + t * ws[j]![k]!, 0);
        let v: number;
        if (args.shift && args.scale) {
          const s = args.scale[bi * r + ri]!;
          v = (cos + args.shift[bi * r + ri]!) * ((s > 0 ? s : Math.expm1(s)) + 1);
        } else {
          v = Math.exp(args.logitScale!) * cos;
        }
        if (args.queryMask && args.queryMask[(sharedMask ? 0 : bi * q) + j] === 0) v = -1e6;
        out[(bi * r + ri) * q + j] = v;
      }
    }
  }
  return out;
}

/** Each row's k largest values, descending, ties to the lower index. */
export function topKReference(x: ArrayLike<number>, rowLength: number, k: number): { values: number[]; indices: number[] } {
  const values: number[] = [];
  const indices: number[] = [];
  for (let row = 0; row * rowLength < x.length; row++) {
    const order = Array.from({ length: rowLength }, (_, j) => j).sort((i, j) => x[row * rowLength + j]! - x[row * rowLength + i]! || i - j);
    for (const j of order.slice(0, k)) {
      values.push(x[row * rowLength + j]!);
      indices.push(j);
    }
  }
  return { values, indices };
}

/**
 * Gradients of `regionWordSimilarityReference`'s logits for dy [B, R, Q] (float64): the cosine's
 * gradient by each normalised row, then the l2-normalisation's backward (elementwise's reference).
 */
export function regionWordSimilarityBackwardReference(
  regions: ArrayLike<number>,
  words: ArrayLike<number>,
  [b, r, q, d]: readonly [number, number, number, number],
  dy: ArrayLike<number>,
  args: RegionWordSimilarityReferenceArgs,
): { regions: Float64Array; words: Float64Array; shift: Float64Array; scale: Float64Array } {
  const bw = words.length / (q * d);
  const unit = (x: ArrayLike<number>, row: number) => {
    const v = Array.from({ length: d }, (_, j) => x[row * d + j]!);
    const norm = Math.sqrt(v.reduce((s, t) => s + t * t, 0)) + 1e-6;
    return v.map((t) => t / norm);
  };
  const dUnitRegions = new Float64Array(b * r * d);
  const dUnitWords = new Float64Array(bw * q * d);
  const shift = new Float64Array(b * r);
  const scale = new Float64Array(b * r);
  for (let bi = 0; bi < b; bi++) {
    for (let ri = 0; ri < r; ri++) {
      const br = bi * r + ri;
      const e = unit(regions, br);
      for (let j = 0; j < q; j++) {
        if (args.queryMask && args.queryMask[(args.queryMask.length === q ? 0 : bi * q) + j] === 0) continue;
        const wr = (bw === 1 ? 0 : bi) * q + j;
        const w = unit(words, wr);
        const cos = e.reduce((s, t, k) => s + t * w[k]!, 0);
        const up = dy[br * q + j]!;
        let g = Math.exp(args.logitScale ?? 0) * up;
        if (args.shift && args.scale) {
          const s = args.scale[br]!;
          g = ((s > 0 ? s : Math.expm1(s)) + 1) * up;
          shift[br]! += g;
          scale[br]! += up * (cos + args.shift[br]!) * (s > 0 ? 1 : Math.exp(s));
        }
        for (let k = 0; k < d; k++) {
          dUnitRegions[br * d + k]! += g * w[k]!;
          dUnitWords[wr * d + k]! += g * e[k]!;
        }
      }
    }
  }
  return {
    regions: elementwiseReference(regions, [b * r, d], { op: 'l2norm_grad', eps: 1e-6 }, dUnitRegions),
    words: elementwiseReference(words, [bw * q, d], { op: 'l2norm_grad', eps: 1e-6 }, dUnitWords),
    shift,
    scale,
  };
}

import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, isCpuAdapter, specialize, subgroupsUsable, uniforms, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import attentionWgsl from '../../shaders/attention.wgsl';
import subgroupRowsWgsl from '../../shaders/subgroupRows.wgsl';

export type AttentionMaskKind = 'none' | 'causal' | 'tensor';
/**
 * 'tiled': K/V tiles staged in workgroup memory, each query row split over invocations so that
 * their state stays in registers (real GPUs). 'subgroup': lanes of a subgroup load
 * different parts of the K/V rows and share them by shuffles, no workgroup memory or barriers
 * (CPU adapters such as lavapipe, where every memory load is a per-lane gather); needs the
 * 'subgroups' feature and subgroups of at least 8 lanes.
 */
export type AttentionVariant = 'tiled' | 'subgroup';

export interface AttentionOptions {
  heads: number;
  /** Softmax scale; default head_dim^-0.5. */
  scale?: number;
  /** One [B, L, 3·H·Dh] input holding q | k | v along the last dimension (default false). */
  packed?: boolean;
  /** 'tensor' adds inputs' last entry, an f32 additive mask [L, L] or per batch [B, L, L] (default 'none'). */
  mask?: AttentionMaskKind;
  /** Default: 'subgroup' under the 'cpu' profile where the adapter supports it, else 'tiled'. */
  variant?: AttentionVariant;
}

/** Largest head dim: the subgroup variant holds a q row and an accumulator row of up to 4 groups of 8 vec4s. */
export const ATTENTION_MAX_HEAD_DIM = 128;

const NAME = 'attention';
const MASK_CODE: Record<AttentionMaskKind, number> = { none: 0, causal: 1, tensor: 2 };
// The subgroup variant: queries (one invocation each) per workgroup.
const SUBGROUP_WG = 16;

/**
 * The tiled variant's layout for a head dim (see the shader): S invocations per query row, each
 * with 4 vec4 chunks; QB queries in a workgroup of about 64 invocations; TK keys per staged tile,
 * 16 unless the tiles would pass the 16 KiB of workgroup memory every WebGPU device has.
 */
function attentionTiledLayout(headDim: number): { S: number; QB: number; WG: number; TK: number } {
  const S = Math.ceil(Math.ceil(headDim / 4) / 4);
  const QB = Math.floor(64 / S);
  const WG = QB * S;
  const bytes = (tk: number) => 2 * tk * S * 4 * 16 + (WG + QB) * tk * 4;
  return { S, QB, WG, TK: bytes(16) <= 16384 ? 16 : 8 };
}
// The subgroup variant is the end of the shader, after this line; it needs `enable subgroups;` and shaders/subgroupRows.wgsl.
const SUBGROUP_MARKER = '// ---- subgroup variant';
const TILED_WGSL = attentionWgsl.slice(0, attentionWgsl.indexOf(SUBGROUP_MARKER));

const QKV_LINE = 'alias QKV = vec4<T>;';


interface Geometry {
  batch: number;
  length: number;
  headDim: number;
  /** Elements per token row of the input(s). */
  rowStride: number;
}

function geometry(inputs: readonly TensorInfo[], o: AttentionOptions): Geometry {
  const packed = !!o.packed;
  const x = inputs[0]!;
  const width = x.shape[2]!;
  const parts = packed ? 3 * o.heads : o.heads;
  return { batch: x.shape[0]!, length: x.shape[1]!, headDim: width / parts, rowStride: width };
}

/**
 * softmax(q·kᵀ·scale + mask)·v over heads, fused. Inputs [q, k, v] each [B, L, H·Dh], or
 * [qkv] [B, L, 3·H·Dh] when `packed`; then the [L, L] f32 mask when mask is 'tensor'.
 * Output [B, L, H·Dh]. Rows whose logits are all -inf give 0.
 */
export const attentionKernel: Kernel<AttentionOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && typeof o === 'object', NAME, 'options { heads, scale?, packed?, mask? } are required');
    const maskKind = o.mask ?? 'none';
    check(Object.hasOwn(MASK_CODE, maskKind), NAME, () => `mask must be 'none', 'causal' or 'tensor', got ${JSON.stringify(o.mask)}`);
    check(o.variant === undefined || o.variant === 'tiled' || o.variant === 'subgroup', NAME, () => `variant must be 'tiled' or 'subgroup', got ${JSON.stringify(o.variant)}`);
    const names = [...(o.packed ? ['qkv'] : ['q', 'k', 'v']), ...(maskKind === 'tensor' ? ['mask'] : [])];
    check(inputs.length === names.length, NAME, () => `expected inputs [${names.join(', ')}], got ${inputs.length} inputs`);
    const x = inputs[0]!;
    const xName = names[0]!;
    check(x.dtype === 'f32' || x.dtype === 'f16', NAME, `${xName} must be f32 or f16, got ${x.dtype}`);
    check(x.shape.length === 3, NAME, () => `${xName} must be [batch, tokens, ${o.packed ? '3·heads·head_dim' : 'heads·head_dim'}], got ${shapeString(x.shape)}`);
    check(Number.isInteger(o.heads) && o.heads > 0, NAME, `heads must be a positive integer, got ${o.heads}`);
    const width = x.shape[2]!;
    const parts = o.packed ? 3 * o.heads : o.heads;
    check(
      width % parts === 0 && width > 0,
      NAME,
      () => `${xName}'s last dimension ${width} must be a positive multiple of ${o.packed ? `3 · heads = ${parts}` : `heads = ${parts}`}`,
    );
    const headDim = width / parts;
    check(headDim <= ATTENTION_MAX_HEAD_DIM, NAME, `head_dim ${headDim} (= ${width} / ${parts}) exceeds the supported ${ATTENTION_MAX_HEAD_DIM}`);
    if (!o.packed) {
      for (const [n, t] of [['k', inputs[1]!], ['v', inputs[2]!]] as const) {
        check(t.dtype === x.dtype, NAME, `${n} must be ${x.dtype} like q, got ${t.dtype}`);
        check(
          t.shape.length === 3 && t.shape.every((d, i) => d === x.shape[i]),
          NAME,
          () => `${n} of shape ${shapeString(t.shape)} must have q's shape ${shapeString(x.shape)}`,
        );
      }
    }
    if (maskKind === 'tensor') {
      const m = inputs[inputs.length - 1]!;
      const length = x.shape[1]!;
      check(m.dtype === 'f32', NAME, `mask must be f32, got ${m.dtype}`);
      const batch = x.shape[0]!;
      check(
        (m.shape.length === 2 || (m.shape.length === 3 && m.shape[0] === batch)) && m.shape.at(-1) === length && m.shape.at(-2) === length,
        NAME,
        () => `mask of shape ${shapeString(m.shape)} must be [${length}, ${length}] (tokens × tokens) or [${batch}, ${length}, ${length}] (one per batch)`,
      );
    }
    check(o.scale === undefined || Number.isFinite(o.scale), NAME, `scale must be a finite number, got ${o.scale}`);
    return [{ shape: [x.shape[0]!, x.shape[1]!, o.heads * headDim], dtype: x.dtype }];
  },
  plan(gpu, inputs, outputs, o) {
    const { batch, length, headDim, rowStride } = geometry(inputs, o);
    const dtype = inputs[0]!.dtype;
    const maskKind = o.mask ?? 'none';
    const variant = o.variant ?? (isCpuAdapter(gpu) && subgroupsUsable(gpu) ? 'subgroup' : 'tiled');
    check(variant === 'tiled' || subgroupsUsable(gpu), NAME, "variant 'subgroup' needs the 'subgroups' feature with subgroups of at least 8 lanes");
    // q, k, v are read as vec4s when head rows are whole vec4s (then so are all offsets).
    const vec = headDim % 4 === 0;
    const tiled = attentionTiledLayout(headDim);
    const queries = variant === 'tiled' ? tiled.QB : SUBGROUP_WG;
    const qBlocks = Math.ceil(length / queries);
    const total = qBlocks * batch * o.heads;
    const scale = o.scale ?? headDim ** -0.5;
    const hd = o.heads * headDim;
    const [qOff, kOff, vOff] = o.packed ? [0, hd, 2 * hd] : [0, 0, 0];
    // Unused bindings (k, v when packed; mask without a tensor) are bound to the first input.
    const mask = maskKind === 'tensor' ? inputs.length - 1 : 0;
    const maskStride = maskKind === 'tensor' && inputs[mask]!.shape.length === 3 ? length * length : 0;
    const x = o.packed ? [0, 0, 0] : [0, 1, 2];
    const out = inputs.length;
    const pairs = batch * o.heads * length * length;
    const elem = BYTES_PER_ELEMENT[dtype];
    return {
      dispatches: [
        {
          program: {
            name: `${NAME}.${variant}`,
            key: `${dtype}|${vec ? 'vec4' : 'scalar'}`,
            code: specialize((variant === 'subgroup' ? 'enable subgroups;\n' + subgroupRowsWgsl + attentionWgsl : TILED_WGSL).replace(QKV_LINE, vec ? QKV_LINE : 'alias QKV = T;'), dtype),
            entryPoint: variant,
            constants: variant === 'tiled' ? { DH: headDim, WG: tiled.WG, TK: tiled.TK } : { DH: headDim, WG: SUBGROUP_WG } as Record<string, number>,
            bindings: ['read', 'read', 'read', 'read', 'write'],
          },
          tensors: [...x, mask, out],
          uniforms: uniforms(length, o.heads, qBlocks, total, rowStride, qOff, kOff, vOff, { f32: scale * Math.LOG2E }, MASK_CODE[maskKind], maskStride),
          workgroups: grid1d(gpu, total, 1),
        },
      ],
      // Nominal: both products over every (query, key) pair, plus exp, max and sum per pair.
      flops: 4 * pairs * headDim + 3 * pairs,
      bytes: (inputs.slice(0, o.packed ? 1 : 3).reduce((s, t) => s + sizeOf(t.shape), 0) + sizeOf(outputs[0]!.shape)) * elem
        + (maskKind === 'tensor' ? 4 * sizeOf(inputs[mask]!.shape) : 0),
    };
  },
};

/** Eager options: `mask` is 'causal' or an additive f32 tensor [L, L] or [B, L, L] (may hold -Infinity). */
export interface AttentionCallOptions {
  heads: number;
  scale?: number;
  mask?: 'causal' | Tensor;
  variant?: AttentionVariant;
}

function split(options: AttentionCallOptions, packed: boolean): { extra: Tensor[]; o: AttentionOptions } {
  const m = options?.mask;
  const mask: AttentionMaskKind = m === undefined ? 'none' : m === 'causal' ? 'causal' : 'tensor';
  check(m === undefined || m === 'causal' || (typeof m === 'object' && m !== null), NAME, () => `mask must be 'causal' or a Tensor, got ${JSON.stringify(m)}`);
  return {
    extra: mask === 'tensor' ? [m as Tensor] : [],
    o: { heads: options?.heads, scale: options?.scale, packed, mask, variant: options?.variant },
  };
}

/** softmax(q·kᵀ·scale + mask)·v with q, k, v [B, L, H·Dh] → [B, L, H·Dh]. */
export async function attention(gpu: Gpu, q: Tensor, k: Tensor, v: Tensor, options: AttentionCallOptions): Promise<Tensor> {
  const { extra, o } = split(options, false);
  return (await runKernel(gpu, attentionKernel, [q, k, v, ...extra], o))[0]!;
}

/** Attention over one packed [B, L, 3·H·Dh] tensor (q | k | v, as a fused in_proj writes it). */
export async function attentionPacked(gpu: Gpu, qkv: Tensor, options: AttentionCallOptions): Promise<Tensor> {
  const { extra, o } = split(options, true);
  return (await runKernel(gpu, attentionKernel, [qkv, ...extra], o))[0]!;
}

// ---- CPU reference (for tests only): float64, one (batch, head, query) row at a time ----

export interface AttentionReferenceOptions {
  batch: number;
  length: number;
  heads: number;
  headDim: number;
  scale?: number;
  /** 'causal', or an additive mask: [L, L], or [B, L, L] (B·L·L values). */
  mask?: 'causal' | ArrayLike<number>;
}

/** q, k, v [B, L, H·Dh] → [B, L, H·Dh]. A row whose logits are all -inf gives 0. */
export function attentionReference(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, o: AttentionReferenceOptions): Float64Array {
  const { batch: B, length: L, heads: H, headDim: D } = o;
  const scale = o.scale ?? D ** -0.5;
  const W = H * D;
  const out = new Float64Array(B * L * W);
  const logits = new Float64Array(L);
  const maskStride = typeof o.mask === 'object' && o.mask.length === B * L * L ? L * L : 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const at = (t: number, d: number) => (b * L + t) * W + h * D + d;
      for (let i = 0; i < L; i++) {
        for (let j = 0; j < L; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += q[at(i, d)]! * k[at(j, d)]!;
          s *= scale;
          if (o.mask === 'causal') s = j > i ? -Infinity : s;
          else if (o.mask) s += o.mask[b * maskStride + i * L + j]!;
          logits[j] = s;
        }
        const max = Math.max(...logits);
        if (max === -Infinity) continue; // fully masked row: 0
        let sum = 0;
        for (let j = 0; j < L; j++) sum += (logits[j] = Math.exp(logits[j]! - max));
        for (let d = 0; d < D; d++) {
          let r = 0;
          for (let j = 0; j < L; j++) r += logits[j]! * v[at(j, d)]!;
          out[at(i, d)] = r / sum;
        }
      }
    }
  }
  return out;
}

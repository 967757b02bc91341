import type { Gpu } from '../gpu/gpu.js';
import { GpuError, check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, isCpuAdapter, specialize, subgroupsUsable, uniforms, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import { attentionKernel, type AttentionMaskKind, type AttentionReferenceOptions } from './attention.js';
import attentionBackwardWgsl from '../../shaders/attentionBackward.wgsl';
import subgroupRowsWgsl from '../../shaders/subgroupRows.wgsl';

/**
 * Kernel options, as the forward's. Inputs are [q, k, v] ([B, L, H·Dh] each) or [qkv] ([B, L,
 * 3·H·Dh] when `packed`), then out and dOut ([B, L, H·Dh]: the forward's output and its upstream
 * gradient), then the f32 mask, [L, L] or [B, L, L], when mask is 'tensor'. Outputs [dq, dk, dv],
 * or [dqkv] (q | k | v gradients along the last dimension) when packed.
 */
export interface AttentionBackwardOptions {
  heads: number;
  /** Softmax scale; default head_dim^-0.5. */
  scale?: number;
  packed?: boolean;
  /** 'tensor': an additive mask input, [L, L] or per batch [B, L, L] (default 'none'). */
  mask?: AttentionMaskKind;
}

const NAME = 'attentionBackward';
const QKV_LINE = 'alias QKV = vec4<T>;';
/** Rows per workgroup. */
const WG = 16;
// The subgroup variant is the end of the shader, after this line; it needs `enable subgroups;` and shaders/subgroupRows.wgsl.
const SUBGROUP_MARKER = '// ---- subgroup variant';
const ROWS_WGSL = attentionBackwardWgsl.slice(0, attentionBackwardWgsl.indexOf(SUBGROUP_MARKER));

/**
 * Gradients of softmax(q·kᵀ·scale + mask)·v (the fused attention kernel) w.r.t. q, k and v, from
 * the forward's output and its upstream gradient; the probabilities are recomputed per row from
 * its log-sum-exp, never stored ([B, H, L] statistics in scratch, not [B, H, L, L]).
 */
export const attentionBackwardKernel: Kernel<AttentionBackwardOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && typeof o === 'object', NAME, 'options { heads, scale?, packed?, mask? } are required');
    const maskKind = o.mask ?? 'none';
    const parts = o.packed ? ['qkv'] : ['q', 'k', 'v'];
    const names = [...parts, 'out', 'dOut', ...(maskKind === 'tensor' ? ['mask'] : [])];
    check(inputs.length === names.length, NAME, () => `expected inputs [${names.join(', ')}], got ${inputs.length} inputs`);
    // q, k, v (and heads, scale, mask kind) by the forward's own checks; its output shape is out's.
    let fwd: TensorInfo;
    try {
      fwd = attentionKernel.outputs(inputs.slice(0, parts.length), { heads: o.heads, scale: o.scale, packed: o.packed, mask: maskKind === 'tensor' ? 'none' : maskKind })[0]!;
    } catch (err) {
      if (err instanceof GpuError) throw new GpuError(NAME, err.message.slice(err.op.length + 2), { cause: err });
      throw err;
    }
    for (const [n, t] of [['out', inputs[parts.length]!], ['dOut', inputs[parts.length + 1]!]] as const) {
      check(t.dtype === fwd.dtype, NAME, `${n} must be ${fwd.dtype} like q, got ${t.dtype}`);
      check(
        t.shape.length === 3 && t.shape.every((d, i) => d === fwd.shape[i]),
        NAME,
        () => `${n} of shape ${shapeString(t.shape)} must be the forward output's [${fwd.shape.join(', ')}]`,
      );
    }
    if (maskKind === 'tensor') {
      const m = inputs[inputs.length - 1]!;
      const [B, L] = fwd.shape as [number, number];
      check(m.dtype === 'f32', NAME, `mask must be f32, got ${m.dtype}`);
      check(
        (m.shape.length === 2 || (m.shape.length === 3 && m.shape[0] === B)) && m.shape.at(-1) === L && m.shape.at(-2) === L,
        NAME,
        () => `mask of shape ${shapeString(m.shape)} must be [${L}, ${L}] or [${B}, ${L}, ${L}]`,
      );
    }
    return inputs.slice(0, parts.length).map((t) => ({ shape: t.shape, dtype: t.dtype }));
  },
  plan(gpu, inputs, outputs, o) {
    const packed = !!o.packed;
    const x = inputs[0]!;
    const [B, L, rowStride] = x.shape as [number, number, number];
    const headDim = rowStride / (packed ? 3 * o.heads : o.heads);
    const scale = o.scale ?? headDim ** -0.5;
    const maskKind = o.mask ?? 'none';
    const hd = o.heads * headDim;
    const [qOff, kOff, vOff] = packed ? [0, hd, 2 * hd] : [0, 0, 0];
    const blocks = Math.ceil(L / WG);
    const total = blocks * B * o.heads;
    const maskInput = maskKind === 'tensor' ? inputs[inputs.length - 1]! : undefined;
    const maskStride = maskInput && maskInput.shape.length === 3 ? L * L : 0;
    const u = uniforms(L, o.heads, blocks, total, rowStride, qOff, kOff, vOff, { f32: scale * Math.LOG2E }, { none: 0, causal: 1, tensor: 2 }[maskKind], maskStride, { f32: scale });
    const n = packed ? 1 : 3;
    // Head rows are read as vec4s when they are whole vec4s (then so are all offsets).
    const vec = headDim % 4 === 0;
    // As the forward: rows in registers shared by subgroup shuffles on CPU adapters, else the rows variant.
    const variant = isCpuAdapter(gpu) && subgroupsUsable(gpu) ? 'subgroup' : 'rows';
    const code = (variant === 'subgroup' ? 'enable subgroups;\n' + subgroupRowsWgsl + attentionBackwardWgsl : ROWS_WGSL).replace(QKV_LINE, vec ? QKV_LINE : 'alias QKV = T;');
    // Bindings [...inputs, grad (dq, then dk), dv, stats]: scratch holds stats and a dummy for the dv
    // binding where nothing goes to it (the dq pass; the dkv pass when packed, dv then going to grad).
    const qkv = packed ? [0, 0, 0] : [0, 1, 2];
    const [out, dOut] = [n, n + 1];
    const mask = maskInput ? inputs.length - 1 : 0;
    const [dq, dk, dv] = packed ? [inputs.length, inputs.length, inputs.length] : [inputs.length, inputs.length + 1, inputs.length + 2];
    const stats = inputs.length + outputs.length;
    const dummy = stats + 1;
    const program = (pass: 'dq' | 'dkv') => ({
      name: `${NAME}.${pass}_${variant}`,
      key: `${x.dtype}|${vec ? 'vec4' : 'scalar'}`,
      code: specialize(code, x.dtype),
      entryPoint: `${pass}_${variant}`,
      constants: { DH: headDim, WG, ...(pass === 'dkv' ? { PACKED: packed ? 1 : 0 } : {}) },
      bindings: [...Array(6).fill('read'), 'write', 'write', pass === 'dq' ? 'write' : 'read'] as ('read' | 'write')[],
    });
    const common = [...qkv, out, dOut, mask];
    const workgroups = grid1d(gpu, total, 1);
    const pairs = B * o.heads * L * L;
    const elem = BYTES_PER_ELEMENT[x.dtype];
    return {
      dispatches: [
        { program: program('dq'), tensors: [...common, dq, dummy, stats], uniforms: u, workgroups },
        { program: program('dkv'), tensors: [...common, dk, packed ? dummy : dv, stats], uniforms: u, workgroups },
      ],
      scratch: [{ shape: [B, o.heads, L, 2], dtype: 'f32' }, { shape: [1], dtype: x.dtype }],
      // Nominal: q·k twice and three more products over every pair in the dq pass, q·k, dout·v
      // and two accumulations in the dkv pass.
      flops: 2 * pairs * headDim * 8 + 10 * pairs,
      bytes: 7 * B * L * hd * elem + (maskInput ? 4 * maskInput.shape.reduce((a, b) => a * b, 1) : 0),
    };
  },
};

/** Eager options: `mask` is 'causal' or an additive f32 tensor [L, L] / [B, L, L] (may hold -Infinity). */
export interface AttentionBackwardCallOptions {
  heads: number;
  scale?: number;
  mask?: 'causal' | Tensor;
}

function split(options: AttentionBackwardCallOptions, packed: boolean): { extra: Tensor[]; o: AttentionBackwardOptions } {
  const m = options?.mask;
  check(m === undefined || m === 'causal' || (typeof m === 'object' && m !== null), NAME, () => `mask must be 'causal' or a Tensor, got ${JSON.stringify(m)}`);
  const mask: AttentionMaskKind = m === undefined ? 'none' : m === 'causal' ? 'causal' : 'tensor';
  return { extra: mask === 'tensor' ? [m as Tensor] : [], o: { heads: options?.heads, scale: options?.scale, packed, mask } };
}

/** { dq, dk, dv } of attention(q, k, v, options) for its output `out` and upstream gradient dOut. */
export async function attentionBackward(
  gpu: Gpu,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  dOut: Tensor,
  options: AttentionBackwardCallOptions,
): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor }> {
  const { extra, o } = split(options, false);
  const [dq, dk, dv] = await runKernel(gpu, attentionBackwardKernel, [q, k, v, out, dOut, ...extra], o);
  return { dq: dq!, dk: dk!, dv: dv! };
}

/** d qkv ([B, L, 3·H·Dh], q | k | v) of attentionPacked(qkv, options). */
export async function attentionPackedBackward(gpu: Gpu, qkv: Tensor, out: Tensor, dOut: Tensor, options: AttentionBackwardCallOptions): Promise<Tensor> {
  const { extra, o } = split(options, true);
  return (await runKernel(gpu, attentionBackwardKernel, [qkv, out, dOut, ...extra], o))[0]!;
}

// ---- CPU reference (for tests only): float64, materialising each head's probabilities ----

/** q, k, v, dOut [B, L, H·Dh] → { dq, dk, dv } [B, L, H·Dh]; an additive mask may be [L, L] or [B, L, L]. */
export function attentionBackwardReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dOut: ArrayLike<number>,
  o: AttentionReferenceOptions,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { batch: B, length: L, heads: H, headDim: D } = o;
  const scale = o.scale ?? D ** -0.5;
  const W = H * D;
  const [dq, dk, dv] = [0, 0, 0].map(() => new Float64Array(B * L * W)) as [Float64Array, Float64Array, Float64Array];
  const maskStride = typeof o.mask === 'object' && o.mask.length === B * L * L ? L * L : 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const at = (t: number, d: number) => (b * L + t) * W + h * D + d;
      const dot = (x: ArrayLike<number>, i: number, y: ArrayLike<number>, j: number) => {
        let s = 0;
        for (let d = 0; d < D; d++) s += x[at(i, d)]! * y[at(j, d)]!;
        return s;
      };
      for (let i = 0; i < L; i++) {
        const logits = Array.from({ length: L }, (_, j) => {
          if (o.mask === 'causal') return j > i ? -Infinity : scale * dot(q, i, k, j);
          return scale * dot(q, i, k, j) + (o.mask ? o.mask[b * maskStride + i * L + j]! : 0);
        });
        const max = Math.max(...logits);
        if (max === -Infinity) continue; // fully masked row: no gradient
        const e = logits.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, c) => a + c, 0);
        const P = e.map((x) => x / sum);
        const dP = Array.from({ length: L }, (_, j) => dot(dOut, i, v, j));
        const Di = P.reduce((a, pj, j) => a + pj * dP[j]!, 0);
        for (let j = 0; j < L; j++) {
          const ds = P[j]! * (dP[j]! - Di) * scale;
          for (let d = 0; d < D; d++) {
            dq[at(i, d)] = dq[at(i, d)]! + ds * k[at(j, d)]!;
            dk[at(j, d)] = dk[at(j, d)]! + ds * q[at(i, d)]!;
            dv[at(j, d)] = dv[at(j, d)]! + P[j]! * dOut[at(i, d)]!;
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

import { describe, expect, it } from 'vitest';
import { Tensor, kernels, type Gpu } from '../../src/index.js';
import { attentionBackwardKernel, attentionBackwardReference } from '../../src/kernels/attentionBackward.js';
import { attentionReference } from '../../src/kernels/attention.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { gradFixture } from '../util/grad.js';
import { randomArray } from '../util/random.js';

interface Case {
  B: number;
  L: number;
  H: number;
  D: number;
  /** 'causal', 'square' ([L, L] tensor with -inf entries and one fully masked row) or 'batched' ([B, L, L]). */
  mask?: 'causal' | 'square' | 'batched';
  packed?: boolean;
  scale?: number;
}

function maskData(c: Case, seed: number): Float32Array | undefined {
  if (c.mask !== 'square' && c.mask !== 'batched') return undefined;
  const n = (c.mask === 'batched' ? c.B : 1) * c.L * c.L;
  // Finite values, some -inf, and row 1 of the first matrix entirely -inf (no softmax: zeros).
  return randomArray(n, seed, 2).map((x, i) => (i % 5 === 3 || (c.L > 1 && Math.floor(i / c.L) === 1) ? -Infinity : x));
}

/** out = the forward (float64 reference, per batch for [B, L, L] masks), then the backward against its reference. */
async function checkCase(gpu: Gpu, c: Case, seed: number, dtype: 'f32' | 'f16' = 'f32') {
  const W = c.H * c.D;
  const n = c.B * c.L * W;
  const round = (a: Float32Array) => (dtype === 'f16' ? Tensor.from(gpu, a, [a.length], 'f16').read().then((r) => Float32Array.from(r)) : Promise.resolve(a));
  const [q, k, v, dOut] = await Promise.all([0, 1, 2, 3].map((i) => round(randomArray(n, seed + i, 1.5))));
  const mask = maskData(c, seed + 4);
  const base = { length: c.L, heads: c.H, headDim: c.D, scale: c.scale };
  let out: Float64Array;
  if (c.mask === 'batched') {
    out = new Float64Array(n);
    const per = c.L * W;
    for (let b = 0; b < c.B; b++) {
      const part = (a: Float32Array) => a.subarray(b * per, (b + 1) * per);
      out.set(attentionReference(part(q!), part(k!), part(v!), { ...base, batch: 1, mask: mask!.subarray(b * c.L * c.L, (b + 1) * c.L * c.L) }), b * per);
    }
  } else {
    out = attentionReference(q!, k!, v!, { ...base, batch: c.B, mask: c.mask === 'causal' ? 'causal' : mask });
  }
  const ref = attentionBackwardReference(q!, k!, v!, dOut!, { ...base, batch: c.B, mask: c.mask === 'causal' ? 'causal' : mask });
  const shape = [c.B, c.L, W];
  const up = (a: ArrayLike<number>, s = shape) => Tensor.from(gpu, Float32Array.from(a), s, dtype);
  const tMask = mask ? Tensor.from(gpu, mask, c.mask === 'batched' ? [c.B, c.L, c.L] : [c.L, c.L]) : undefined;
  const options = { heads: c.H, scale: c.scale, mask: c.mask === 'causal' ? ('causal' as const) : tMask };
  const [tOut, tdOut] = [up(out), up(dOut!)];
  const label = `B${c.B} L${c.L} H${c.H} Dh${c.D}${c.mask ? ` ${c.mask}` : ''}${c.packed ? ' packed' : ''} ${dtype}`;
  const tol = dtype === 'f16' ? 2e-2 : 1e-5;
  const made: Tensor[] = [tOut, tdOut, ...(tMask ? [tMask] : [])];
  if (c.packed) {
    const qkv = new Float32Array(3 * n);
    for (let t = 0; t < c.B * c.L; t++) [q, k, v].forEach((x, p) => qkv.set(x!.subarray(t * W, (t + 1) * W), (3 * t + p) * W));
    const tqkv = up(qkv, [c.B, c.L, 3 * W]);
    const d = await kernels.attentionPackedBackward(gpu, tqkv, tOut, tdOut, options);
    expect(d.shape).toEqual([c.B, c.L, 3 * W]);
    const got = await d.read();
    for (const [p, name] of ['dq', 'dk', 'dv'].entries()) {
      const part = Float32Array.from({ length: n }, (_, i) => got[(3 * Math.floor(i / W) + p) * W + (i % W)]!);
      expectClose(part, ref[name as 'dq'], { scaleTol: tol, label: `${label} ${name}` });
    }
    made.push(tqkv, d);
  } else {
    const [tq, tk, tv] = [up(q!), up(k!), up(v!)];
    const d = await kernels.attentionBackward(gpu, tq, tk, tv, tOut, tdOut, options);
    for (const name of ['dq', 'dk', 'dv'] as const) {
      expect(d[name].shape).toEqual(shape);
      expectClose(await d[name].read(), ref[name], { scaleTol: tol, label: `${label} ${name}` });
    }
    made.push(tq, tk, tv, d.dq, d.dk, d.dv);
  }
  for (const t of made) t.dispose();
}

forEachProfile((profile, getGpu) => {
  describe('attentionBackward', () => {
    // Few head dims: each is a pipeline to compile (slow on lavapipe); the fixture adds 12 and 16.
    it('matches the reference: awkward sizes, head dims not a multiple of 4, every mask kind, packed', async () => {
      const gpu = await getGpu();
      const cases: Case[] = [
        { B: 1, L: 1, H: 1, D: 4 },
        { B: 2, L: 7, H: 2, D: 8 },
        { B: 1, L: 19, H: 3, D: 5, scale: 0.7 },
        { B: 2, L: 33, H: 2, D: 8, mask: 'causal' },
        { B: 2, L: 17, H: 2, D: 4, mask: 'square' },
        { B: 2, L: 9, H: 3, D: 4, mask: 'batched' },
        { B: 2, L: 18, H: 2, D: 8, packed: true, mask: 'causal' },
        { B: 1, L: 5, H: 2, D: 5, packed: true, mask: 'batched' },
      ];
      for (const [i, c] of cases.entries()) await checkCase(gpu, c, 100 * i);
    });

    it('matches PyTorch autograd (float64) on the grad/ attention fixture (no mask, causal, additive [B, L, L])', async () => {
      const gpu = await getGpu();
      const fx = gradFixture('attention');
      for (const c of fx.cases) {
        const up = (name: string) => Tensor.from(gpu, fx.tensor(`${c.name}.${name}`).data, fx.tensor(`${c.name}.${name}`).shape);
        const [q, k, v, dY] = ['q', 'k', 'v', 'dY'].map(up) as [Tensor, Tensor, Tensor, Tensor];
        const heads = c.params.heads as number;
        const scale = c.params.scale as number;
        const kind = c.params.mask as string;
        const maskT = kind === 'none' ? undefined : up('mask');
        // The forward kernel takes the [L, L] masks; for the [B, L, L] one the backward gets torch's f32 output.
        const out = kind === 'additive' ? up('Y_f32') : await kernels.attention(gpu, q, k, v, { heads, scale, mask: maskT });
        expectClose(await out.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        for (const mask of kind === 'causal' ? (['causal', maskT] as const) : [maskT]) {
          const d = await kernels.attentionBackward(gpu, q, k, v, out, dY, { heads, scale, mask });
          for (const name of ['q', 'k', 'v'] as const) {
            expectClose(await d[`d${name}`].read(), fx.tensor(`${c.name}.grad_${name}_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_${name}` });
          }
          for (const t of [d.dq, d.dk, d.dv]) t.dispose();
        }
        for (const t of [q, k, v, dY, out, maskT]) t?.dispose();
      }
    });

    // The subgroup variant (cpu profile) holds rows as 1 to 4 groups of 8 vec4s: one case per
    // group count. The rows variant (gpu profile) takes minutes to compile at head dim 128 on
    // lavapipe: there only the first case.
    it('matches the reference at head dims 32, 64 and 128 (1, 2, 4 register groups), L not a multiple of 16', async () => {
      const gpu = await getGpu();
      const cases: Case[] = [
        { B: 1, L: 21, H: 2, D: 32, mask: 'square' },
        { B: 2, L: 17, H: 1, D: 64, mask: 'causal' },
        { B: 1, L: 35, H: 1, D: 128, packed: true },
      ];
      for (const [i, c] of cases.slice(0, profile === 'cpu' ? 3 : 1).entries()) await checkCase(gpu, c, 1000 + 100 * i);
      // Cold, lavapipe compiles the two passes per head dim in 10-60 s of CPU time (more under load).
    }, 600_000);

    it('f16 storage matches the reference within 2e-2 (vec4 rows, and head dim 7: scalar loads of f16)', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      await checkCase(gpu, { B: 2, L: 11, H: 2, D: 8, mask: 'causal' }, 900, 'f16');
      await checkCase(gpu, { B: 1, L: 9, H: 2, D: 7, packed: true }, 910, 'f16');
    });

    it('rejects bad input before dispatching', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, new Float32Array(2 * 3 * 8), [2, 3, 8]);
      const bad = Tensor.from(gpu, new Float32Array(2 * 3 * 4), [2, 3, 4]);
      const m = Tensor.from(gpu, new Float32Array(4), [2, 2]);
      const before = gpu.stats();
      await expect(kernels.attentionBackward(gpu, x, x, x, bad, x, { heads: 2 })).rejects.toThrow(
        /^attentionBackward: out of shape \[2, 3, 4\] must be the forward output's \[2, 3, 8\]$/,
      );
      await expect(kernels.attentionBackward(gpu, x, bad, x, x, x, { heads: 2 })).rejects.toThrow(/^attentionBackward: k of shape \[2, 3, 4\] must have q's shape \[2, 3, 8\]$/);
      await expect(kernels.attentionBackward(gpu, x, x, x, x, x, { heads: 3 })).rejects.toThrow(/^attentionBackward: q's last dimension 8 must be a positive multiple of heads = 3$/);
      await expect(kernels.attentionBackward(gpu, x, x, x, x, x, { heads: 2, mask: m })).rejects.toThrow(/^attentionBackward: mask of shape \[2, 2\] must be \[3, 3\] or \[2, 3, 3\]$/);
      expect(() => attentionBackwardKernel.outputs([x, x, x, x], { heads: 2 })).toThrow(/^attentionBackward: expected inputs \[q, k, v, out, dOut\], got 4 inputs$/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [x, bad, m]) t.dispose();
    });
  });
});

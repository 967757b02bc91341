import { describe, expect, it } from 'vitest';
import { Tensor, kernels, openGpu, type Gpu } from '../../src/index.js';
import { attentionReference, type AttentionVariant } from '../../src/kernels/attention.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixtureTensor, loadFixture } from '../util/fixtures.js';
import { randomArray, rng } from '../util/random.js';

/**
 * Variants to test for a head dim: the profile's default always; the other where the adapter
 * allows it, for head dims up to 16 only (each head dim is a pipeline to compile; the code does not
 * depend on it otherwise). Each profile's variant has its own test at the head dims models use.
 */
function variants(gpu: Gpu, headDim: number): AttentionVariant[] {
  const subgroup = gpu.features.has('subgroups') && (gpu.info.subgroupMinSize ?? 0) >= 8;
  const preferred: AttentionVariant = kernels.isCpuAdapter(gpu) && subgroup ? 'subgroup' : 'tiled';
  const other: AttentionVariant = preferred === 'tiled' ? 'subgroup' : 'tiled';
  return headDim <= 16 && (other === 'tiled' || subgroup) ? [preferred, other] : [preferred];
}

/** [B, L, 3·W] packed rows from three [B, L, W] arrays. */
function pack(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, rows: number, width: number): Float32Array {
  const out = new Float32Array(rows * 3 * width);
  for (let r = 0; r < rows; r++) {
    for (const [part, x] of [q, k, v].entries()) {
      for (let c = 0; c < width; c++) out[r * 3 * width + part * width + c] = x[r * width + c]!;
    }
  }
  return out;
}

/** [B, H, L, D] → [B, L, H·D]. */
function headsToRows(x: ArrayLike<number>, [B, H, L, D]: readonly number[]): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < B!; b++)
    for (let h = 0; h < H!; h++)
      for (let t = 0; t < L!; t++)
        for (let d = 0; d < D!; d++) out[((b * L! + t) * H! + h) * D! + d] = x[((b * H! + h) * L! + t) * D! + d]!;
  return out;
}

/** An additive mask with -inf entries and finite offsets; row `dead` (if any) fully masked. */
function randomMask(L: number, seed: number, dead?: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: L * L }, (_, e) =>
    Math.floor(e / L) === dead || (r() < 0.3 && e % L !== Math.floor(e / L)) ? -Infinity : (r() - 0.5) * 4,
  );
}

forEachProfile((profile, getGpu) => {
  describe('attention', () => {
    // [batch, tokens, heads, headDim]: tokens 1, 7, 50, 129 and every supported head-dim class.
    const SHAPES: [number, number, number, number][] = [
      [1, 1, 1, 64],
      [2, 7, 3, 12],
      [3, 50, 2, 16],
      [1, 129, 2, 32],
      [2, 50, 12, 64],
      [1, 129, 1, 80],
      [1, 7, 4, 128],
      [1, 50, 2, 6],
    ];

    it('matches the reference on random shapes, packed and unpacked, every mask kind and variant', async () => {
      const gpu = await getGpu();
      for (const [s, [B, L, H, D]] of SHAPES.entries()) {
        const W = H * D;
        const n = B * L * W;
        const [q, k, v] = [1, 2, 3].map((i) => randomArray(n, 10 * s + i, 2));
        const maskData = randomMask(L, 99 + s, L > 3 ? 2 : undefined);
        const tq = Tensor.from(gpu, q!, [B, L, W]);
        const tk = Tensor.from(gpu, k!, [B, L, W]);
        const tv = Tensor.from(gpu, v!, [B, L, W]);
        const tqkv = Tensor.from(gpu, pack(q!, k!, v!, B * L, W), [B, L, 3 * W]);
        const tmask = Tensor.from(gpu, maskData, [L, L]);
        const scale = s % 2 ? 0.3 : undefined;
        for (const mask of [undefined, 'causal', tmask] as const) {
          const ref = attentionReference(q!, k!, v!, {
            batch: B, length: L, heads: H, headDim: D, scale, mask: mask instanceof Tensor ? maskData : mask,
          });
          for (const variant of variants(gpu, D)) {
            for (const packed of [false, true]) {
              const label = `B${B} L${L} H${H} D${D} ${mask instanceof Tensor ? 'tensor' : mask ?? 'no'} mask, ${variant}${packed ? ' packed' : ''}`;
              const options = { heads: H, scale, mask, variant };
              const y = packed ? await kernels.attentionPacked(gpu, tqkv, options) : await kernels.attention(gpu, tq, tk, tv, options);
              expect(y.shape).toEqual([B, L, W]);
              expectClose(await y.read(), ref, { scaleTol: 1e-5, label });
              y.dispose();
            }
          }
        }
        for (const t of [tq, tk, tv, tqkv, tmask]) t.dispose();
      }
      // Cold, lavapipe compiles a pipeline per head dim in 1-20 s of CPU time.
    }, 300_000);

    it('takes a per-batch [B, L, L] mask (each batch its own), packed and unpacked, every variant', async () => {
      const gpu = await getGpu();
      const shapes: [number, number, number, number][] = [[2, 7, 3, 12], [3, 50, 2, 16]];
      for (const [s, [B, L, H, D]] of shapes.entries()) {
        const W = H * D;
        const [q, k, v] = [1, 2, 3].map((i) => randomArray(B * L * W, 40 * s + i, 2));
        // Batch b's mask has its own -inf pattern and a different fully masked row.
        const maskData = Float32Array.from(Array.from({ length: B }, (_, b) => Array.from(randomMask(L, 300 + 10 * s + b, b % L))).flat());
        const [tq, tk, tv] = [q, k, v].map((x) => Tensor.from(gpu, x!, [B, L, W]));
        const tqkv = Tensor.from(gpu, pack(q!, k!, v!, B * L, W), [B, L, 3 * W]);
        const tmask = Tensor.from(gpu, maskData, [B, L, L]);
        const ref = attentionReference(q!, k!, v!, { batch: B, length: L, heads: H, headDim: D, mask: maskData });
        for (const variant of variants(gpu, D)) {
          for (const packed of [false, true]) {
            const y = packed ? await kernels.attentionPacked(gpu, tqkv, { heads: H, mask: tmask, variant }) : await kernels.attention(gpu, tq!, tk!, tv!, { heads: H, mask: tmask, variant });
            expectClose(await y.read(), ref, { scaleTol: 1e-5, label: `B${B} L${L} [B, L, L] mask ${variant}${packed ? ' packed' : ''}` });
            y.dispose();
          }
        }
        const wrong = Tensor.from(gpu, new Float32Array((B + 1) * L * L), [B + 1, L, L]);
        await expect(kernels.attention(gpu, tq!, tk!, tv!, { heads: H, mask: wrong })).rejects.toThrow(new RegExp(`mask of shape \\[${B + 1}, ${L}, ${L}\\] must be \\[${L}, ${L}\\] \\(tokens × tokens\\) or \\[${B}, ${L}, ${L}\\] \\(one per batch\\)`));
        for (const t of [tq, tk, tv, tqkv, tmask, wrong]) t!.dispose();
      }
    }, 300_000);

    it('gives 0 for rows whose logits are all -inf', async () => {
      const gpu = await getGpu();
      const L = 9;
      const maskData = randomMask(L, 5, 4);
      const [q, k, v] = [1, 2, 3].map((i) => randomArray(L * 32, i));
      const [tq, tk, tv] = [q, k, v].map((x) => Tensor.from(gpu, x!, [1, L, 32]));
      const tmask = Tensor.from(gpu, maskData, [L, L]);
      for (const variant of variants(gpu, 16)) {
        const y = await kernels.attention(gpu, tq!, tk!, tv!, { heads: 2, mask: tmask, variant });
        const got = await y.read();
        expect(Array.from(got.slice(4 * 32, 5 * 32))).toEqual(new Array(32).fill(0));
        expect(got.every(Number.isFinite)).toBe(true);
        y.dispose();
      }
      for (const t of [tq, tk, tv, tmask]) t!.dispose();
    });

    it('matches the float64 fixtures (attention.safetensors), tensor and causal masks', async () => {
      const gpu = await getGpu();
      const file = loadFixture('attention.safetensors');
      for (const name of ['L1', 'L7', 'L50', 'L197', 'L16_causal', 'L77_causal', 'L50_large_logits']) {
        const get = (part: string) => fixtureTensor(file, `${name}.${part}`);
        const shape = get('q').shape;
        const [B, H, L, D] = shape as [number, number, number, number];
        const [tq, tk, tv] = ['q', 'k', 'v'].map((part) => Tensor.from(gpu, headsToRows(get(part).data, shape), [B, L, H * D]));
        const expected = headsToRows(get('out').data, shape);
        const masks: ('causal' | Tensor | undefined)[] = [];
        if (file.has(`${name}.mask`)) masks.push(Tensor.from(gpu, get('mask').data, [L, L]), 'causal');
        else masks.push(undefined);
        for (const mask of masks) {
          for (const variant of variants(gpu, D)) {
            const y = await kernels.attention(gpu, tq!, tk!, tv!, { heads: H, scale: 0.25, mask, variant });
            expectClose(await y.read(), expected, { scaleTol: 1e-5, label: `${name} ${mask instanceof Tensor ? 'tensor' : mask ?? 'no'} mask ${variant}` });
            y.dispose();
          }
          if (mask instanceof Tensor) mask.dispose();
        }
        for (const t of [tq, tk, tv]) t!.dispose();
      }
    });

    it('f16 storage matches the reference within 1e-2', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      // Head dim 16 reads q, k, v as vec4s, 7 as scalars.
      for (const [B, L, H, D] of [[2, 33, 3, 16], [1, 9, 2, 7]] as const) {
        const W = H * D;
        const tensors = [1, 2, 3].map((i) => Tensor.from(gpu, randomArray(B * L * W, 40 + i, 2), [B, L, W], 'f16'));
        const [q, k, v] = await Promise.all(tensors.map((t) => t.read()));
        const tqkv = Tensor.from(gpu, pack(q!, k!, v!, B * L, W), [B, L, 3 * W], 'f16');
        const ref = attentionReference(q!, k!, v!, { batch: B, length: L, heads: H, headDim: D, mask: 'causal' });
        for (const variant of variants(gpu, D)) {
          const y = await kernels.attention(gpu, tensors[0]!, tensors[1]!, tensors[2]!, { heads: H, mask: 'causal', variant });
          const z = await kernels.attentionPacked(gpu, tqkv, { heads: H, mask: 'causal', variant });
          expect(y.dtype).toBe('f16');
          expectClose(await y.read(), ref, { scaleTol: 1e-2, label: `f16 D${D} ${variant}` });
          expectClose(await z.read(), ref, { scaleTol: 1e-2, label: `f16 D${D} packed ${variant}` });
          y.dispose();
          z.dispose();
        }
        for (const t of [...tensors, tqkv]) t.dispose();
      }
    });

    it("the profile's variant (subgroup under 'cpu' where subgroups allow, tiled under 'gpu') at head dims 32, 64, 128 and 80 (partial groups), with and without masks, f32 and f16", async (ctx) => {
      const gpu = await getGpu();
      const [variant] = variants(gpu, 128);
      const dtypes = gpu.features.has('shader-f16') ? (['f32', 'f16'] as const) : (['f32'] as const);
      for (const [s, [B, L, H, D]] of ([[2, 37, 3, 32], [1, 50, 2, 64], [1, 29, 2, 128], [1, 21, 1, 80]] as const).entries()) {
        const W = H * D;
        const maskData = randomMask(L, 70 + s, 3);
        const tmask = Tensor.from(gpu, maskData, [L, L]);
        for (const dtype of dtypes) {
          const tensors = [1, 2, 3].map((i) => Tensor.from(gpu, randomArray(B * L * W, 60 + 10 * s + i, 2), [B, L, W], dtype));
          const [q, k, v] = await Promise.all(tensors.map((t) => t.read()));
          for (const mask of [undefined, 'causal', tmask] as const) {
            const ref = attentionReference(q!, k!, v!, { batch: B, length: L, heads: H, headDim: D, mask: mask instanceof Tensor ? maskData : mask });
            const y = await kernels.attention(gpu, tensors[0]!, tensors[1]!, tensors[2]!, { heads: H, mask, variant });
            // f16 rounds the inputs only (the math is f32): the output's own rounding is the error.
            expectClose(await y.read(), ref, { scaleTol: dtype === 'f16' ? 1e-3 : 1e-5, label: `${variant} D${D} L${L} ${dtype} ${mask instanceof Tensor ? 'tensor' : mask ?? 'no'} mask` });
            y.dispose();
          }
          for (const t of tensors) t.dispose();
        }
        tmask.dispose();
      }
      if (!gpu.features.has('shader-f16')) ctx.skip("f32 passed; the f16 part needs 'shader-f16', which the adapter does not offer");
      // Cold, lavapipe compiles a pipeline per head dim in 1-20 s of CPU time.
    }, 300_000);

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const q = Tensor.from(gpu, new Float32Array(2 * 5 * 24), [2, 5, 24]);
      const k4 = Tensor.from(gpu, new Float32Array(2 * 4 * 24), [2, 4, 24]);
      const qkv = Tensor.from(gpu, new Float32Array(2 * 5 * 72), [2, 5, 72]);
      const m55 = Tensor.from(gpu, new Float32Array(25), [5, 5]);
      const m45 = Tensor.from(gpu, new Float32Array(20), [4, 5]);
      const wide = Tensor.from(gpu, new Float32Array(5 * 130), [1, 5, 130]);
      const flat = Tensor.from(gpu, new Float32Array(120), [5, 24]);
      const qi = Tensor.from(gpu, new Int32Array(2 * 5 * 24), [2, 5, 24], 'i32');
      const before = gpu.stats();
      await expect(kernels.attention(gpu, q, q, q, { heads: 5 })).rejects.toThrow(/attention: q's last dimension 24 must be a positive multiple of heads = 5/);
      await expect(kernels.attentionPacked(gpu, qkv, { heads: 5 })).rejects.toThrow(/attention: qkv's last dimension 72 must be a positive multiple of 3 · heads = 15/);
      await expect(kernels.attentionPacked(gpu, q, { heads: 0 })).rejects.toThrow(/heads must be a positive integer, got 0/);
      await expect(kernels.attention(gpu, q, k4, q, { heads: 2 })).rejects.toThrow(/attention: k of shape \[2, 4, 24\] must have q's shape \[2, 5, 24\]/);
      await expect(kernels.attention(gpu, q, q, k4, { heads: 2 })).rejects.toThrow(/attention: v of shape \[2, 4, 24\] must have q's shape \[2, 5, 24\]/);
      await expect(kernels.attention(gpu, flat, flat, flat, { heads: 2 })).rejects.toThrow(/attention: q must be \[batch, tokens, heads·head_dim\], got \[5, 24\]/);
      await expect(kernels.attention(gpu, q, q, q, { heads: 2, mask: m45 })).rejects.toThrow(/attention: mask of shape \[4, 5\] must be \[5, 5\]/);
      await expect(kernels.attentionPacked(gpu, qkv, { heads: 2, mask: q })).rejects.toThrow(/attention: mask of shape \[2, 5, 24\] must be \[5, 5\]/);
      await expect(kernels.attention(gpu, q, q, qi, { heads: 2 })).rejects.toThrow(/attention: v must be f32 like q, got i32/);
      await expect(kernels.attention(gpu, qi, qi, qi, { heads: 2 })).rejects.toThrow(/attention: q must be f32 or f16, got i32/);
      await expect(kernels.attention(gpu, q, q, q, { heads: 2, mask: qi as never })).rejects.toThrow(/attention: mask must be f32, got i32/);
      await expect(kernels.attention(gpu, wide, wide, wide, { heads: 1 })).rejects.toThrow(/attention: head_dim 130 \(= 130 \/ 1\) exceeds the supported 128/);
      await expect(kernels.attention(gpu, q, q, q, { heads: 2, mask: 'upper' as never })).rejects.toThrow(/attention: mask must be 'causal' or a Tensor, got "upper"/);
      await expect(kernels.attention(gpu, q, q, q, { heads: 2, scale: NaN })).rejects.toThrow(/attention: scale must be a finite number, got NaN/);
      await expect(kernels.attention(gpu, q, q, q, { heads: 2, variant: 'fast' as never })).rejects.toThrow(/attention: variant must be 'tiled' or 'subgroup'/);
      expect(() => kernels.attentionKernel.outputs([{ shape: [2, 5, 24], dtype: 'f32' }], { heads: 2, mask: 'tensor', packed: true })).toThrow(
        /attention: expected inputs \[qkv, mask\], got 1 inputs/,
      );
      expect(gpu.stats()).toEqual(before);
      m55.dispose();
      const disposed = Tensor.from(gpu, new Float32Array(24), [1, 1, 24]);
      disposed.dispose();
      await expect(kernels.attentionPacked(gpu, disposed, { heads: 2 })).rejects.toThrow(/disposed/);
      for (const t of [q, k4, qkv, m45, wide, flat, qi]) t.dispose();
    });

    it('without subgroups: falls back to the tiled variant, and refuses the subgroup one', async () => {
      const gpu = await openGpu({ profile, disableFeatures: ['subgroups'] });
      try {
        const x = Tensor.from(gpu, randomArray(5 * 32, 3), [1, 5, 32]);
        const before = gpu.stats();
        await expect(kernels.attention(gpu, x, x, x, { heads: 2, variant: 'subgroup' })).rejects.toThrow(
          /attention: variant 'subgroup' needs the 'subgroups' feature/,
        );
        expect(gpu.stats()).toEqual(before);
        const y = await kernels.attention(gpu, x, x, x, { heads: 2 });
        const data = await x.read();
        expectClose(await y.read(), attentionReference(data, data, data, { batch: 1, length: 5, heads: 2, headDim: 16 }), { scaleTol: 1e-5 });
        x.dispose();
        y.dispose();
      } finally {
        gpu.close();
      }
    });
  });
});

// gradCAM and the vision tower at other resolutions against ../shared/fixtures/clip_tiny/car_gradcam.*
// (CaR's own code on clip_tiny; see the fixtures README): every stage ≤ 1e-4 of its scale against
// the float64 run, at the native 32x32 and at 40x56 (position embedding upsampled from 4x4 to 5x7).
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { ClipModel, gradCamToImage, resizePositionEmbedding, type Gpu } from '../../src/index.js';
import { decodeSafetensors } from '../../src/io/safetensors.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixturePath } from '../util/fixtures.js';
import { fixtureTensors } from '../util/grad.js';

const car = fixtureTensors('clip_tiny', 'car_gradcam.safetensors');
const t = (name: string) => car(name).data;
const meta = JSON.parse(readFileSync(fixturePath('clip_tiny', 'car_gradcam.json'), 'utf8')) as { results: { resolutions: Record<string, { pixel_hw: [number, number]; grid_hw: [number, number]; ori_wh_for_highres: [number, number] }> } };
const weightsPath = () => fixturePath('clip_tiny', 'weights_openai.safetensors');
const load = (gpu: Gpu) => ClipModel.load(gpu, weightsPath(), { heads: { vision: 2, text: 4 } });
const RESOLUTIONS = ['native', 'ns'] as const;
const D = 128;
const TARGETS = [0, 1, 2];

/** fg then bg rows of a [n, …] fixture pair, as one array. */
const fgBg = (res: string, what: string) => Float32Array.from([...t(`${res}.fg_${what}`), ...t(`${res}.bg_${what}`)]);

/** [1, D, gh, gw] (the fixture's layout) → [gh·gw, D] (ours). */
function tokensMajor(x: ArrayLike<number>, n: number): Float64Array {
  const out = new Float64Array(n * D);
  for (let c = 0; c < D; c++) for (let i = 0; i < n; i++) out[i * D + c] = x[c * n + i]!;
  return out;
}

const close = (label: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol = 1e-4) => console.log(expectClose(got, ref, { scaleTol: tol, label }).message);

describe('position embedding resize (CaR upsample_position_embedding)', () => {
  const pos = () => decodeSafetensors(readFileSync(weightsPath())).get('visual.positional_embedding')!.data as Float32Array;
  for (const res of RESOLUTIONS) {
    it(`${res}: bilinear (align_corners=False) vs F.upsample, then fp16 as .half()`, () => {
      const grid = meta.results.resolutions[res]!.grid_hw;
      const n = grid[0] * grid[1];
      const pre = resizePositionEmbedding(pos(), D, [4, 4], grid, { half: false });
      close(`${res} pos_upsample_raw`, pre.subarray(D), tokensMajor(t(`${res}.pos_upsample_raw_f64`), n), 1e-6);
      close(`${res} pos_embed_prehalf`, pre, t(`${res}.pos_embed_prehalf_f64`), 1e-6);
      // Near zero the interpolation cancels, so float32 runs that round differently (CaR's, ours) can
      // land on different fp16 values (README: allow 1 fp16 ulp; 2 values flip in float64 too): each
      // value is within 1 fp16 ulp, or within 1e-6 of the scale where the float32 results already differ.
      const used = resizePositionEmbedding(pos(), D, [4, 4], grid);
      const ref = t(`${res}.pos_embed_used`);
      const scale = Math.max(...Array.from(ref, Math.abs));
      let flips = 0;
      for (let i = 0; i < ref.length; i++) {
        if (used[i] === ref[i]) continue;
        flips++;
        // fp16 spacing at the larger of the two (subnormals: 2^-24).
        const ulp = 2 ** Math.max(Math.floor(Math.log2(Math.max(Math.abs(ref[i]!), Math.abs(used[i]!)))) - 10, -24);
        expect(Math.abs(used[i]! - ref[i]!), `pos_embed_used[${i}]`).toBeLessThanOrEqual(Math.max(ulp, 1e-6 * scale));
      }
      console.log(`${res}: ${flips} of ${ref.length} fp16 values differ`);
      expect(flips).toBeLessThanOrEqual(4);
      // Every value is an fp16 value.
      expect(Array.from(used).every((v) => Math.fround(v) === v && Number.isFinite(v) && (v === 0 || Math.abs(v) >= 2 ** -24))).toBe(true);
    });
  }

  it('bicubic keeps constants and the identity size; the class row is kept', () => {
    const dim = 3;
    const src = Float32Array.from({ length: 17 * dim }, (_, i) => (i < dim ? 7 + i : 0.25));
    const up = resizePositionEmbedding(src, dim, [4, 4], [6, 9], { mode: 'bicubic', half: false });
    expect(Array.from(up.subarray(0, dim))).toEqual([7, 8, 9]);
    for (const v of up.subarray(dim)) expect(v).toBeCloseTo(0.25, 6);
    const ramp = Float32Array.from({ length: 17 * dim }, (_, i) => Math.sin(i));
    expect(resizePositionEmbedding(ramp, dim, [4, 4], [4, 4], { mode: 'bicubic', half: false })).toEqual(ramp);
    expect(resizePositionEmbedding(ramp, dim, [4, 4], [4, 4], { half: false })).toEqual(ramp);
  });
});

forEachProfile((profile, getGpu) => {
  for (const res of RESOLUTIONS) {
    it(`${res}: gradCam logits, probs, activations, gradients, CAMs and attention within 1e-4 of CaR (f64)`, { timeout: 600_000 }, async () => {
      const gpu = await getGpu();
      const model = await load(gpu);
      const r = meta.results.resolutions[res]!;
      const [h, w] = r.pixel_hw;
      const [gh, gw] = r.grid_hw;
      const n = gh * gw;
      const l = n + 1;
      const out = await model.gradCam({ data: t(`${res}.pixel_values`) as Float32Array, shape: [1, 3, h, w] }, fgBg(res, 'text_features_f64'), { targets: TARGETS, intermediates: true });
      expect(out.grid).toEqual([gh, gw]);
      expect(out.targets).toEqual(TARGETS);
      close('logits', out.logits, t(`${res}.logits_f64`));
      close('probs', out.probs, t(`${res}.probs_f64`));
      close('activations', out.activations!, tokensMajor(t(`${res}.activations_f64`), n));
      for (const k of TARGETS) {
        close(`t${k} gradients`, out.gradients!.subarray(k * n * D, (k + 1) * n * D), tokensMajor(t(`${res}.t${k}.gradients_f64`), n));
        close(`t${k} cam_raw`, out.raw.subarray(k * n, (k + 1) * n), t(`${res}.t${k}.cam_raw_f64`));
        close(`t${k} cam_scaled`, out.cam.subarray(k * n, (k + 1) * n), t(`${res}.t${k}.cam_scaled_f64`));
      }
      const [ow, oh] = r.ori_wh_for_highres;
      const high = gradCamToImage(out, ow, oh);
      for (const k of TARGETS) close(`t${k} cam_highres`, high.subarray(k * ow * oh, (k + 1) * ow * oh), t(`${res}.t${k}.cam_highres_f64`));
      // attention: [layers, L, L]; the fixture has the blocks before the last, then the last.
      expect(out.attention!.length).toBe(2 * l * l);
      close('attention (blocks before the last)', out.attention!.subarray(0, l * l), t(`${res}.attn_blocks_f64`));
      close('attention (last block)', out.attention!.subarray(l * l), t(`${res}.attn_last_f64`));

      // Token ids through the text tower in the same graph (fg, then bg already templated): the same.
      const ids = Int32Array.from([...t(`${res}.fg_ids`), ...t(`${res}.bg_ids`)]);
      const viaIds = await model.gradCam({ data: t(`${res}.pixel_values`) as Float32Array, shape: [1, 3, h, w] }, { ids, shape: [5, 16] }, { targets: [1], attention: false });
      close('logits (token ids)', viaIds.logits, t(`${res}.logits_f64`));
      close('t1 cam_scaled (token ids)', viaIds.cam, t(`${res}.t1.cam_scaled_f64`));
      expect(viaIds.attention).toBeUndefined();

      // Without the fp16 rounding of the position embedding (CaR's nohalf set).
      const nohalf = await model.gradCam({ data: t(`${res}.pixel_values`) as Float32Array, shape: [1, 3, h, w] }, fgBg(res, 'text_features_f64'), { targets: [0], position: { half: false }, attention: false });
      close('nohalf logits', nohalf.logits, t(`${res}.nohalf.logits_f64`));
      close('nohalf probs', nohalf.probs, t(`${res}.nohalf.probs_f64`));
      close('nohalf t0 cam_raw', nohalf.raw, t(`${res}.nohalf.t0.cam_raw_f64`));
      close('nohalf t0 cam_scaled', nohalf.cam, t(`${res}.nohalf.t0.cam_scaled_f64`));
      model.dispose();
    });
  }

  if (profile === 'cpu') {
    it('the vision tower at 40x56: tokens after the first block as CaR, one submit per gradCam', { timeout: 600_000 }, async () => {
      const gpu = await getGpu();
      const model = await load(gpu);
      const px = t('ns.pixel_values') as Float32Array;
      const run = await model.runVision(px, [1, 3, 40, 56], { intermediates: true });
      close('ns image_features (block0_out)', run.intermediates!.block0_out!, t('ns.image_features_f64'));
      // Same plan twice: the second call is exactly one submit.
      const args = [{ data: px, shape: [1, 3, 40, 56] }, fgBg('ns', 'text_features_f64'), { targets: [0, 2] }] as const;
      await model.gradCam(...args);
      const before = gpu.stats().submits;
      const again = await model.gradCam(...args);
      expect(gpu.stats().submits - before).toBe(1);
      close('t2 cam_scaled (targets [0, 2])', again.cam.subarray(35), t('ns.t2.cam_scaled_f64'));
      model.dispose();
    });

    it('f16 weights and activations: the 40x56 maps and probabilities within 2e-2 of CaR (f64)', { timeout: 600_000 }, async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      const model = await ClipModel.load(gpu, weightsPath(), { heads: { vision: 2, text: 4 }, dtype: 'f16' });
      const out = await model.gradCam({ data: t('ns.pixel_values') as Float32Array, shape: [1, 3, 40, 56] }, fgBg('ns', 'text_features_f64'), { targets: TARGETS });
      close('f16 probs', out.probs, t('ns.probs_f64'), 2e-2);
      for (const k of TARGETS) close(`f16 t${k} cam_scaled`, out.cam.subarray(k * 35, (k + 1) * 35), t(`ns.t${k}.cam_scaled_f64`), 2e-2);
      model.dispose();
    });

    it('refuses bad input naming what is wrong', { timeout: 120_000 }, async () => {
      const gpu = await getGpu();
      const model = await load(gpu);
      const px = { data: new Float32Array(3 * 36 * 32), shape: [1, 3, 36, 32] };
      const text = fgBg('native', 'text_features_f64');
      await expect(model.gradCam(px, text)).rejects.toThrow(/ClipModel.gradCam: pixels must be \[1, 3, H, W\] with H and W positive multiples of the patch size 8/);
      const ok = { data: new Float32Array(3 * 32 * 32), shape: [1, 3, 32, 32] };
      await expect(model.gradCam(ok, text, { targets: [5] })).rejects.toThrow(/options.targets must be a non-empty array of text indices in \[0, 5\), got \[5\]/);
      await expect(model.gradCam(ok, text, { targets: [] })).rejects.toThrow(/options.targets/);
      await expect(model.gradCam(ok, new Float32Array(33))).rejects.toThrow(/text embeddings must be a Float32Array of \[T, 32\] values, got 33 values/);
      await expect(model.gradCam(ok, ['a cat'])).rejects.toThrow(/strings need a tokenizer/);
      await expect(model.gradCam(ok, text, { logitScale: Number.NaN })).rejects.toThrow(/logitScale must be a finite number/);
      await expect(model.gradCam(ok, text, { templates: ['a {}'] })).rejects.toThrow(/templates apply to string texts/);
      await expect(model.gradCam(ok, text, { position: { mode: 'nearest' as 'bilinear' } })).rejects.toThrow(/position mode must be 'bilinear' or 'bicubic'/);
      await expect(model.runVision(new Float32Array(3 * 20 * 16), [1, 3, 20, 16])).rejects.toThrow(/pixels must be \[B, 3, H, W\] with H and W positive multiples of the patch size 8/);
      expect(() => gradCamToImage({ grid: [4, 4], cam: new Float32Array(15) }, 8, 8)).toThrow(/cam must be a Float32Array of \[maps, 4, 4\] values, got 15 values/);
      model.dispose();
    });
  }
});

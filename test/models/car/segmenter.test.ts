// CaR's pipeline on ovgpu's CLIP: the proposal stage end to end against CaR's own code
// (../shared/fixtures/clip_tiny/car_gradcam.*: gradCAM, CLIP-ES boxes, refined grid and map at 32x32
// and 40x56), the classification tower against a CPU reference, and whole segment() runs on a random
// CLIP with a tokenizer (structure, options, bad input).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CarSegmenter, ClipModel, TINY_CLIP, proposeMasks, writeRandomModel, type ClipConfig } from '../../../src/index.js';
import { useGpu } from '../../util/gpu.js';
import { expectClose } from '../../util/check.js';
import { fixturePath } from '../../util/fixtures.js';
import { fixtureTensors } from '../../util/grad.js';

const getGpu = useGpu();
const car = fixtureTensors('clip_tiny', 'car_gradcam.safetensors');
const t = (name: string) => car(name).data;
const RES = { native: { hw: [32, 32], ori: [30, 27] }, ns: { hw: [40, 56], ori: [53, 38] } } as const;

describe('proposeMasks against CaR (clip_tiny, car_gradcam fixture)', () => {
  let clip: ClipModel;
  beforeAll(async () => {
    clip = await ClipModel.load(await getGpu(), fixturePath('clip_tiny', 'weights_openai.safetensors'), { heads: { vision: 2, text: 4 } });
  });
  afterAll(() => clip?.dispose());

  for (const res of ['native', 'ns'] as const) {
    it(`${res}: CAMs, CLIP-ES boxes, refined grids and maps`, async () => {
      const [h, w] = RES[res].hw;
      const [ow, oh] = RES[res].ori;
      const fg = Float32Array.from(t(`${res}.fg_text_features_f64`));
      const bg = Float32Array.from(t(`${res}.bg_text_features_f64`));
      const r = await proposeMasks(clip, { data: t(`${res}.pixel_values`) as Float32Array, shape: [1, 3, h, w] }, fg, bg, ow, oh);
      const n = r.grid[0] * r.grid[1];
      for (const k of [0, 1, 2]) {
        expectClose(r.cams.subarray(k * n, (k + 1) * n), t(`${res}.t${k}.cam_scaled_f64`), { scaleTol: 1e-4, label: `t${k} cam_scaled` });
        const boxes = car(`${res}.t${k}.boxes`);
        expect(r.boxes[k]).toEqual(Array.from({ length: boxes.shape[0]! }, (_, b) => Array.from(boxes.data.slice(b * 4, b * 4 + 4))));
        expectClose(r.refined[k]!, t(`${res}.t${k}.cam_refined_grid_f64`), { scaleTol: 1e-4, label: `t${k} cam_refined_grid` });
        // The refined map divides by the refined grid's range (ill-conditioned, see the fixtures README).
        const report = expectClose(r.maps[k]!, t(`${res}.t${k}.cam_refined_highres_f64`), { scaleTol: 1e-5, label: `t${k} cam_refined_highres` });
        console.log(report.message);
      }
      expectClose(r.transition, t(`${res}.t0.trans_mat_sq_f64`), { scaleTol: 1e-4, label: 'trans_mat_sq' });
    });
  }
});

/** A random CLIP (TINY_CLIP with patch 16 and CLIP's 77-token context) with its byte tokenizer. */
const CONFIG: ClipConfig = { ...TINY_CLIP, vision: { ...TINY_CLIP.vision!, patchSize: 16 }, text: { ...TINY_CLIP.text!, contextLength: 77 } };

describe('CarSegmenter.segment on a random CLIP', () => {
  let dir: string;
  let seg: CarSegmenter;
  const width = 45;
  const height = 37;
  // A synthetic image: a bright disc on a dark gradient.
  const image = {
    width,
    height,
    channels: 3 as const,
    data: Uint8Array.from({ length: width * height * 3 }, (_, i) => {
      const p = Math.floor(i / 3);
      const x = p % width;
      const y = Math.floor(p / width);
      return (x - 20) ** 2 + (y - 18) ** 2 < 120 ? 220 - (i % 3) * 40 : 30 + x + (i % 3) * 10;
    }),
  };
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ovgpu-car-'));
    writeRandomModel(dir, 'clip', CONFIG, 7);
    seg = await CarSegmenter.load(await getGpu(), dir);
  });
  afterAll(() => {
    seg?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives each query a mask at the image size, a score and whether it survived, in query order', async () => {
    const queries = ['a disc', 'the background', 'a red car'];
    const events: string[] = [];
    const r = await seg.segment(image, queries, { background: ['ground'], prompts: 'circle,blur', onProgress: (e) => events.push(`${e.stage}:${e.step}`) });
    expect(r.width).toBe(width);
    expect(r.height).toBe(height);
    expect(r.iterations).toBe(r.stages.length);
    expect(r.iterations).toBeGreaterThanOrEqual(2);
    expect(r.results.map((x) => x.query)).toEqual(queries);
    for (const [i, x] of r.results.entries()) {
      expect(x.mask.length).toBe(width * height);
      expect(x.mask.every((v) => v === 0 || v === 1)).toBe(true);
      expect(x.survived).toBe(r.stages.at(-1)!.kept.includes(i));
      if (!x.survived) expect([x.score, x.mask.some((v) => v)]).toEqual([0, false]);
      else expect(x.score).toBe(r.stages.at(-1)!.scores[r.stages.at(-1)!.queries.indexOf(i)]);
    }
    expect(r.results.some((x) => x.survived)).toBe(true);
    expect(events.slice(0, 3)).toEqual(['1:proposals', '1:prompts', '1:classification']);
    expect(events.at(-1)).toBe(`${r.iterations}:crf`);
    // Stage 1 ran every query; each later stage ran the previous stage's kept ones.
    expect(r.stages[0]!.queries).toEqual([0, 1, 2]);
    for (let s = 1; s < r.stages.length; s++) expect(r.stages[s]!.queries).toEqual(r.stages[s - 1]!.kept);
    // Same input, same result.
    const again = await seg.segment(image, queries, { background: ['ground'], prompts: 'circle,blur' });
    expect(again.results.map((x) => [x.score, x.survived])).toEqual(r.results.map((x) => [x.score, x.survived]));
  });

  it('without the CRF the masks are the proposals above maskThreshold; threshold 0 keeps every query', async () => {
    const r = await seg.segment(image, ['a disc', 'a square'], { crf: false, threshold: 0, semanticTemplates: ['a photo of a {}.', 'a {}.'] });
    expect(r.results.every((x) => x.survived)).toBe(true);
    for (const x of r.results) expect(Array.from(x.mask)).toEqual(Array.from(x.proposal!, (v) => (v > 0.5 ? 1 : 0)));
    expect(r.timings.crf).toBe(0);
  });

  it("the classification tower: CaR's (before the last block) and the whole tower, against references", async () => {
    const v = CONFIG.vision!;
    const n = 3;
    const s = v.imageSize;
    const pixels = Float32Array.from({ length: n * 3 * s * s }, (_, i) => Math.sin(i * 0.37) * 1.5);
    const clip = seg.classifier;
    const ref = await clip.runVision(pixels, [n, 3, s, s], { position: {}, intermediates: true });
    const whole = await seg.classifierEmbeddings(pixels, n, { withLastBlock: true });
    expectClose(whole, ref.embeds, { scaleTol: 1e-5, label: 'whole tower' });
    // CaR: the class token after block L-2, ln_post and the projection, on the CPU in float64.
    const width = v.width;
    const tokens = ref.intermediates![`block${v.layers - 2}_out`]!;
    const lnW = (await clip.weights.vision!.get('ln_post.weight')!.read()) as Float32Array;
    const lnB = (await clip.weights.vision!.get('ln_post.bias')!.read()) as Float32Array;
    const proj = (await clip.weights.vision!.get('proj')!.read()) as Float32Array;
    const e = CONFIG.embedDim;
    const want = new Float64Array(n * e);
    const perImage = tokens.length / n;
    for (let b = 0; b < n; b++) {
      const x = tokens.subarray(b * perImage, b * perImage + width);
      const mean = x.reduce((a, c) => a + c, 0) / width;
      const variance = x.reduce((a, c) => a + (c - mean) ** 2, 0) / width;
      const y = Array.from(x, (c, i) => ((c - mean) / Math.sqrt(variance + v.eps)) * lnW[i]! + lnB[i]!);
      // proj as stored for the model's convention: [E, width] (NK) or [width, E] (KN).
      const nk = clip.convention.projectionLayout === 'NK';
      for (let j = 0; j < e; j++) for (let i = 0; i < width; i++) want[b * e + j]! += y[i]! * proj[nk ? j * width + i : i * e + j]!;
    }
    expectClose(await seg.classifierEmbeddings(pixels, n), want, { scaleTol: 1e-4, label: "CaR's classification tower" });
  });

  it('refuses bad input naming it', async () => {
    await expect(seg.segment(image, [])).rejects.toThrow(/at least one query/);
    await expect(seg.segment(image, ['a', '  '])).rejects.toThrow(/query 1 is empty/);
    await expect(seg.segment(image, ['a'], { prompts: 'circle,glow' })).rejects.toThrow(/unknown visual prompt type "glow"/);
    await expect(seg.segment(image, ['a'], { threshold: 1.5 })).rejects.toThrow(/threshold must be in \[0, 1\], got 1.5/);
    await expect(seg.segment(image, ['a'], { threshold: -0.1 })).rejects.toThrow(/threshold must be in \[0, 1\]/);
    const tiny = { width: 15, height: 40, channels: 3 as const, data: new Uint8Array(15 * 40 * 3) };
    await expect(seg.segment(tiny, ['a'])).rejects.toThrow(/15×40, smaller than one 16×16 patch/);
    await expect(seg.segment(image, ['a'], { camTemplate: 'no slot' })).rejects.toThrow(/camTemplate must be a string with \{\}/);
  });
});

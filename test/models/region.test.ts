import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { ClipModel, RegionClassifier, preprocessClip, preprocessOwlVit, type PromptTokenizer } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';

const getGpu = useGpu();
const io = () => loadFixture('clip_tiny', 'io.safetensors');
const f32 = (name: string) => fixtureTensor(io(), name).data as Float32Array;
const E = 32;
const T = 17;

/** Image b of the fixture batch as a [1, 3, 32, 32] PixelBatch. */
const image = (b: number) => ({ data: f32('pixel_values').slice(b * 3072, (b + 1) * 3072), shape: [1, 3, 32, 32] as [1, 3, number, number] });
/** Token (row, col) of the 4×4 grid of image b, from the float64 reference dense map. */
const token = (b: number, row: number, col: number) => f32('vision_tokens_proj_f64').subarray((b * T + 1 + row * 4 + col) * E, (b * T + 2 + row * 4 + col) * E);
const mean = (rows: ArrayLike<number>[]) => Float64Array.from({ length: E }, (_, d) => rows.reduce((s, r) => s + r[d]!, 0) / rows.length);

/** clip_tiny's vocabulary is not CLIP's: each prompt stands for one row of the fixture's input_ids. */
const ROWS: Record<string, number> = { l0: 0, l1: 1, l2: 2, a: 0, xa: 1, b: 2, xb: 0 };
const tokenizer: PromptTokenizer = {
  encode(text) {
    const row = ROWS[text];
    if (row === undefined) throw new Error(`test tokenizer: no ids for ${JSON.stringify(text)}`);
    return fixtureTensor(io(), 'input_ids_i32').data.slice(row * 16, (row + 1) * 16) as Int32Array;
  },
};

let clip: ClipModel;
let rc: RegionClassifier;
let dir: string;
beforeAll(async () => {
  const config = JSON.parse(readFileSync(fixturePath('clip_tiny', 'config.json'), 'utf8'));
  clip = await ClipModel.load(await getGpu(), fixturePath('clip_tiny', 'weights_openai.safetensors'), { config });
  rc = new RegionClassifier(clip, { tokenizer });
  dir = mkdtempSync(join(tmpdir(), 'ovgpu-region-'));
});
afterAll(() => {
  rc?.dispose();
  clip?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('RegionClassifier on clip_tiny', () => {
  it('region embeddings are RoIAlign means of the dense token map (reference map, computed here)', async () => {
    // spatialScale 4/32, aligned (-0.5 token), one bin, ceil(side) samples per side: a box over
    // whole patches samples exactly their centres; a box shifted by half a patch samples midpoints.
    const boxes = [
      [0, 0, 32, 32], // the whole grid: mean of tokens 1..16
      [8, 8, 24, 24], // the central 2×2 patches
      [0, 24, 8, 32], // one patch: bottom-left
      [4, 0, 12, 8], // half a patch right of patch (0, 0): the midpoint of (0, 0) and (0, 1)
    ] as const;
    for (const b of [0, 1]) {
      const all = Array.from({ length: 16 }, (_, i) => token(b, i >> 2, i & 3));
      const want = [mean(all), mean([token(b, 1, 1), token(b, 1, 2), token(b, 2, 1), token(b, 2, 2)]), mean([token(b, 3, 0)]), mean([token(b, 0, 0), token(b, 0, 1)])];
      const got = await rc.embedRegions(image(b), boxes);
      const ref = new Float64Array(boxes.length * E);
      want.forEach((w, i) => ref.set(w, i * E));
      console.log(expectClose(got, ref, { scaleTol: 1e-4, label: `image ${b} region embeddings` }).message);
    }
  });

  it('labels and attributes: CLIP logits, softmax and ranking as a float64 computation from the reference embeddings', async () => {
    const boxes = [[0, 0, 32, 32], [8, 0, 32, 16], [3, 5, 11, 30]] as const;
    const result = await rc.classify(image(1), boxes, { labels: ['l0', 'l1', 'l2'], templates: ['{}'], attributes: ['a', 'b'], attributeTemplates: ['{}', 'x{}'], topK: 3 });
    const regions = await rc.embedRegions(image(1), boxes);
    // The whole-grid region from the reference map, to tie the ranking to reference numbers.
    expectClose(regions.subarray(0, E), mean(Array.from({ length: 16 }, (_, i) => token(1, i >> 2, i & 3))), { scaleTol: 1e-4 });
    const text = f32('text_embeds_f64');
    const unit = (v: ArrayLike<number>) => {
      const n = Math.hypot(...Array.from(v));
      return Array.from(v, (x) => x / n);
    };
    const row = (r: number) => unit(text.subarray(r * E, (r + 1) * E));
    const labelWords = [row(0), row(1), row(2)];
    const attrWords = [[row(0), row(1)], [row(2), row(0)]].map(([p, q]) => p!.map((x, d) => (x + q![d]!) / 2));
    const scale = Math.exp(fixtureTensor(loadFixture('clip_tiny', 'weights_openai.safetensors'), 'logit_scale').data[0]!);
    expect(result).toHaveLength(3);
    result.forEach((r, k) => {
      expect(r.box).toEqual([...boxes[k]!]);
      const region = unit(regions.subarray(k * E, (k + 1) * E));
      for (const [got, words, names] of [[r.categories, labelWords, ['l0', 'l1', 'l2']], [r.attributes, attrWords, ['a', 'b']]] as const) {
        const logits = words.map((w) => (scale * w.reduce((s, x, d) => s + x * region[d]!, 0)) / Math.hypot(...w));
        const z = Math.max(...logits);
        const probs = logits.map((l) => Math.exp(l - z) / logits.reduce((s, m) => s + Math.exp(m - z), 0));
        const order = names.map((_, i) => i).sort((i, j) => logits[j]! - logits[i]!);
        expect(got.map((c) => c.name)).toEqual(order.map((i) => names[i]));
        expectClose(got.map((c) => c.logit), order.map((i) => logits[i]!), { scaleTol: 1e-4, label: `box ${k} logits` });
        expectClose(got.map((c) => c.score), order.map((i) => probs[i]!), { atol: 1e-5, label: `box ${k} scores` });
      }
    });
    // topK trims; a second call reuses the cached prompt embeddings and gives the same numbers.
    const top1 = await rc.classify(image(1), boxes, { labels: ['l0', 'l1', 'l2'], templates: ['{}'], topK: 1 });
    expect(top1.map((r) => r.categories)).toEqual(result.map((r) => r.categories.slice(0, 1)));
    expect(top1.every((r) => r.attributes.length === 0)).toBe(true);
  });

  it('maps boxes of an image file through the preprocessing: squash (default) and centre crop', async () => {
    const path = join(dir, 'img.png');
    const raw = Buffer.from(Array.from({ length: 64 * 48 * 3 }, (_, i) => (i * 37 + (i % 3) * 91) % 256));
    await sharp(raw, { raw: { width: 64, height: 48, channels: 3 } }).png().toFile(path);
    const box = [10, 6, 50, 40] as const;
    // squash: 64×48 → 32×32, x by 1/2, y by 2/3.
    const squashed = await preprocessOwlVit(path, { size: 32 });
    expectClose(await rc.embedRegions(path, [box]), await rc.embedRegions(squashed, [[5, 4, 25, 80 / 3]]), { scaleTol: 1e-6 });
    // crop: 64×48 → 42×32 (x and y by 42/64 and 32/48), then 5 columns cut on the left.
    const cropped = await preprocessClip(path, { size: 32 });
    const [fx, fy] = [42 / 64, 32 / 48];
    expectClose(await rc.embedRegions(path, [box], { resize: 'crop' }), await rc.embedRegions(cropped, [[10 * fx - 5, 6 * fy, 50 * fx - 5, 40 * fy]]), { scaleTol: 1e-6 });
  });

  it('classifies 20 new box sets on one image with one vision run, padded box buckets equal to single boxes, plans within their cap', async () => {
    const gpu = await getGpu();
    // Below the vision plan's ~80 KB plus six box-head buckets (1 to 32 boxes, ~5-10 KB each): plans get evicted.
    const cap = { maxPlans: 8, maxBytes: 48 * 1024 };
    const r = new RegionClassifier(clip, { tokenizer, plans: cap });
    const opts = { labels: ['l0', 'l1', 'l2'], templates: ['{}'], attributes: ['a', 'b'], attributeTemplates: ['{}'], topK: 2 };
    await r.promptEmbeddings(opts.labels, opts.templates); // the text tower's runs, before counting
    await r.promptEmbeddings(opts.attributes, opts.attributeTemplates);
    const gridBytes = 4 * 4 * E * 4;
    const before = gpu.stats();
    const sets = Array.from({ length: 20 }, (_, s) => Array.from({ length: 1 + ((s * 7) % 20) }, (_, i) => [(i + s) % 16, i % 12, 16 + ((i * 3) % 16), 20 + (s % 12)] as const));
    const results = [];
    for (const boxes of sets) {
      results.push(await r.classify(image(0), boxes, opts));
      expect(gpu.stats().liveBytes - before.liveBytes).toBeLessThanOrEqual(cap.maxBytes + gridBytes);
    }
    // The vision tower ran on the first set only: one submit for it, then one per set for the box head.
    expect(gpu.stats().submits - before.submits).toBe(1 + sets.length);
    // A box classified within a padded bucket of 16 equals the same box alone (a bucket of 1).
    const alone = await r.classify(image(0), [sets[19]![4]!], opts);
    expect(alone[0]!.categories.map((c) => c.name)).toEqual(results[19]![4]!.categories.map((c) => c.name));
    expectClose(alone[0]!.categories.map((c) => c.logit), results[19]![4]!.categories.map((c) => c.logit), { scaleTol: 1e-6 });
    expectClose(await r.embedRegions(image(0), sets[5]!.slice(2, 3)), (await r.embedRegions(image(0), sets[5]!)).subarray(2 * E, 3 * E), { scaleTol: 1e-6 });
    // A new image runs the tower again, once.
    const submits = gpu.stats().submits;
    await r.embedRegions(image(1), sets[0]!);
    await r.embedRegions(image(1), sets[1]!);
    expect(gpu.stats().submits - submits).toBe(3);
    r.dispose();
    expect(gpu.stats().liveBytes).toBe(before.liveBytes);
  });

  it('refuses bad arguments before running anything', async () => {
    const gpu = await getGpu();
    const before = gpu.stats().submits;
    const opts = { labels: ['l0'] };
    await expect(rc.classify(image(0), [[0, 0, 1, 1]], { labels: [] })).rejects.toThrow(/at least one label/);
    await expect(rc.classify(image(0), [[0, 0, NaN, 1]], opts)).rejects.toThrow(/box 0 must be 4 finite numbers/);
    await expect(rc.classify(image(0), [[0, 0, 1] as unknown as [number, number, number, number]], opts)).rejects.toThrow(/box 0/);
    await expect(rc.classify(image(0), [[0, 0, 1, 1]], { ...opts, topK: 0 })).rejects.toThrow(/topK must be an integer/);
    await expect(rc.classify(image(0), [[0, 0, 1, 1]], { ...opts, templates: ['no placeholder'] })).rejects.toThrow(/templates must be/);
    await expect(rc.embedRegions({ data: new Float32Array(3 * 16 * 16), shape: [1, 3, 16, 16] }, [[0, 0, 1, 1]])).rejects.toThrow(/pixels must be \[1, 3, 32, 32\]/);
    await expect(new RegionClassifier(clip).classify(image(0), [[0, 0, 1, 1]], { labels: ['zzz'] })).rejects.toThrow(/no tokenizer/);
    await expect(rc.embedRegions(join(dir, 'missing.png'), [[0, 0, 1, 1]])).rejects.toThrow(/cannot read the image/);
    expect(gpu.stats().submits).toBe(before);
    expect(await rc.classify(image(0), [], opts)).toEqual([]);
  });
});

describe('RegionClassifier with f16 weights', () => {
  it('whole-grid region embedding within 2e-2 of the reference mean', async (ctx) => {
    const gpu = await getGpu();
    if (!gpu.features.has('shader-f16')) return ctx.skip();
    const config = JSON.parse(readFileSync(fixturePath('clip_tiny', 'config.json'), 'utf8'));
    const half = await ClipModel.load(gpu, fixturePath('clip_tiny', 'weights_openai.safetensors'), { config, dtype: 'f16' });
    const r = new RegionClassifier(half, { tokenizer });
    const got = await r.embedRegions(image(0), [[0, 0, 32, 32]]);
    console.log(expectClose(got, mean(Array.from({ length: 16 }, (_, i) => token(0, i >> 2, i & 3))), { scaleTol: 2e-2, label: 'f16 whole-grid region' }).message);
    const [res] = await r.classify(image(0), [[0, 0, 32, 32]], { labels: ['l0', 'l1', 'l2'], templates: ['{}'] });
    expect(res!.categories).toHaveLength(3);
    r.dispose();
    half.dispose();
  });
});

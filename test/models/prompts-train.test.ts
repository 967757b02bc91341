// Prompt learning end to end on a tiny random CLIP (4 × 4 patch grid) and synthetic shapes: the
// category is the shape, the attributes the colour. Training must lower the loss and beat the
// hand-written templates on held-out images; learned prompts then classify through RegionClassifier.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError, RegionClassifier, TINY_CLIP, clipLogits, evaluateAttributes, readPromptRecords, readPrompts, savePrompts, trainPrompts, writeRandomModel, type PromptRecord, type TrainPromptsResult } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';
import { COLOURS, SHAPES, writeShapes } from '../util/shapes.js';

const getGpu = useGpu();
const CONFIG = { ...TINY_CLIP, vision: { ...TINY_CLIP.vision!, patchSize: 16 } };
let dir: string;
let records: PromptRecord[];
let rc: RegionClassifier;
let trained: TrainPromptsResult;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ovgpu-prompts-'));
  writeRandomModel(join(dir, 'clip'), 'clip', CONFIG, 3);
  writeRandomModel(join(dir, 'other'), 'clip', CONFIG, 4);
  records = await writeShapes(dir, 36, 5);
  rc = await RegionClassifier.load(await getGpu(), join(dir, 'clip'));
}, 60_000);
afterAll(() => {
  rc?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('trainPrompts on synthetic shapes', () => {
  it('lowers the loss and beats the hand-written templates on held-out images', async () => {
    const epochs: number[] = [];
    trained = await trainPrompts(rc, { records, epochs: 20, batchSize: 16, lr: 0.02, nCtx: 4, holdout: 0.25, patience: 20, onEpoch: (e) => epochs.push(e.epoch) });
    const h = trained.history;
    expect(epochs).toEqual(h.map((e) => e.epoch));
    expect(trained.counts).toEqual({ train: 54, heldOut: 18 });
    expect(trained.prompts.categories!.names).toEqual(expect.arrayContaining([...SHAPES]));
    expect(trained.prompts.attributes!.names).toEqual(expect.arrayContaining(Object.keys(COLOURS)));
    const best = h[trained.bestEpoch - 1]!;
    console.log(`loss ${h[0]!.loss.toFixed(3)} → ${h.at(-1)!.loss.toFixed(3)}; held-out loss ${h[0]!.heldOutLoss!.toFixed(3)} → best ${best.heldOutLoss!.toFixed(3)} (epoch ${trained.bestEpoch}); held-out accuracy ${best.heldOutAccuracy!.toFixed(3)} vs templates ${trained.templates!.heldOutAccuracy!.toFixed(3)}; attribute mAP ${best.heldOutMAP!.toFixed(3)} vs templates ${trained.templates!.heldOutMAP!.toFixed(3)}; ${(h.slice(1).reduce((s, e) => s + e.seconds / e.steps, 0) / (h.length - 1) * 1000).toFixed(1)} ms per step`);
    expect(h.at(-1)!.loss).toBeLessThan(0.75 * h[0]!.loss);
    expect(best.heldOutLoss!).toBeLessThan(0.8 * h[0]!.heldOutLoss!);
    expect(best.heldOutAccuracy!).toBeGreaterThan(trained.templates!.heldOutAccuracy! + 0.1);
    expect(best.heldOutMAP!).toBeGreaterThanOrEqual(trained.templates!.heldOutMAP!);
  }, 600_000);

  it('saves the prompts; RegionClassifier classifies with them as the host computes from their features', async (ctx) => {
    if (!trained) return ctx.skip('the training test did not run');
    const path = join(dir, 'prompts.safetensors');
    savePrompts(path, trained.prompts);
    const back = await readPrompts(path);
    expect(back.categories!.names).toEqual(trained.prompts.categories!.names);
    expect(Array.from(back.attributes!.ctx)).toEqual(Array.from(trained.prompts.attributes!.ctx));
    const record = records[0]!;
    const boxes = record.boxes.map((b) => b.box);
    const results = await rc.classify(record.image, boxes, { prompts: path, topK: 3 });
    // Independent: region embeddings, the saved features, CLIP logits and softmax / sigmoid on the host.
    const regions = await rc.embedRegions(record.image, boxes);
    const e = CONFIG.embedDim;
    const scale = Math.exp(rc.clip.logitScale);
    const cats = clipLogits(regions, back.categories!.features, e, scale);
    const attrs = clipLogits(regions, back.attributes!.features, e, scale);
    results.forEach((r, i) => {
      const nc = back.categories!.names.length;
      const row = Array.from(cats.subarray(i * nc, (i + 1) * nc));
      const best = row.indexOf(Math.max(...row));
      expect(r.categories[0]!.name).toBe(back.categories!.names[best]);
      const z = row.reduce((s, v) => s + Math.exp(v - row[best]!), 0);
      expect(r.categories[0]!.score).toBeCloseTo(1 / z, 4);
      for (const a of r.attributes) {
        const j = back.attributes!.names.indexOf(a.name);
        expect(a.logit).toBeCloseTo(attrs[i * back.attributes!.names.length + j]!, 3);
        expect(a.score).toBeCloseTo(1 / (1 + Math.exp(-a.logit)), 6);
      }
    });
    // The evaluation of those scores against the labels, as evaluateAttributes computes it.
    const names = back.attributes!.names;
    const ev = evaluateAttributes({ scores: attrs, labels: record.boxes.flatMap((b) => names.map((n) => b.attributes![n]!)), attributes: names });
    expect(ev.excluded.every((n) => record.boxes.every((b) => b.attributes![n] !== 1))).toBe(true);

    // Another checkpoint of the same shape: refused, naming the file.
    const other = await RegionClassifier.load(rc.clip.gpu, join(dir, 'other'));
    await expect(other.classify(record.image, boxes, { prompts: path })).rejects.toThrow(/prompts\.safetensors: the categories prompts were trained on another CLIP checkpoint or tokenizer/);
    other.dispose();
    await expect(rc.classify(record.image, boxes, { prompts: path, labels: ['x'] })).rejects.toThrow(/labels come from the learned prompts/);
  }, 300_000);
});

describe('trainPrompts early stop', () => {
  it('stops after `patience` epochs without a better held-out loss and keeps the best epoch', async () => {
    // A learning rate too small to move the held-out loss by the 1e-7 it must improve by.
    const r = await trainPrompts(rc, { records: records.slice(0, 8), epochs: 10, lr: 1e-12, nCtx: 2, holdout: 0.25, patience: 2 });
    expect(r.history.map((e) => e.epoch)).toEqual([1, 2, 3]);
    expect(r.bestEpoch).toBe(1);
    expect(r.stoppedEarly).toBe(true);
    expect(r.counts).toEqual({ train: 12, heldOut: 4 });
  }, 300_000);
});

describe('trainPrompts input checks', () => {
  it('names the record, line and box of bad data before any work', async () => {
    const jsonl = join(dir, 'bad.jsonl');
    const write = (lines: unknown[]) => writeFileSync(jsonl, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n'));
    const good = { image: 'shape-0.png', boxes: [{ box: [1, 2, 30, 40], category: 'square', attributes: { red: 1 } }] };
    write([good, { image: 'missing.png', boxes: good.boxes }]);
    expect(() => readPromptRecords(jsonl)).toThrow(/bad\.jsonl:2: image .*missing\.png does not exist/);
    write([good, '', { image: 'shape-1.png', boxes: [] }]);
    expect(() => readPromptRecords(jsonl)).toThrow(/bad\.jsonl:3: the record has no boxes/);
    write([{ image: 'shape-1.png', boxes: [{ box: [1, 2, 3], category: 'x' }] }]);
    expect(() => readPromptRecords(jsonl)).toThrow(/bad\.jsonl:1: box 0: "box" must be 4 numbers/);
    write([{ image: 'shape-1.png', boxes: [{ box: [1, 2, 3, 4], attributes: { red: 2 } }] }]);
    expect(() => readPromptRecords(jsonl)).toThrow(/bad\.jsonl:1: box 0: attribute "red" is 2: expected 1, 0 or -1/);
    write(['{ nope']);
    expect(() => readPromptRecords(jsonl)).toThrow(/bad\.jsonl:1: not JSON/);
    write([good]);
    const ok = readPromptRecords(jsonl);
    expect(ok[0]!.image).toBe(join(dir, 'shape-0.png'));
    await expect(trainPrompts(rc, { records: ok, attributes: ['blue'] })).rejects.toThrow(/bad\.jsonl:1: box 0: attribute "red" is not in the attribute vocabulary/);
    await expect(trainPrompts(rc, { records: ok, categories: ['circle'] })).rejects.toThrow(/category "square" is not in the category vocabulary/);
    await expect(trainPrompts(rc, { records: [{ image: ok[0]!.image, boxes: [{ box: [1, 2, 30, 40] }] }] })).rejects.toThrow(/empty vocabularies/);
    await expect(trainPrompts(rc, { records: [] })).rejects.toThrow(InputError);
    await expect(trainPrompts(rc, { records: ok, holdout: 1 })).rejects.toThrow(/holdout must be a fraction in \[0, 1\)/);
    await expect(trainPrompts(rc, { records: ok, epochs: 0 })).rejects.toThrow(/epochs must be a positive integer/);
    const box = ok[0]!.boxes[0]!;
    await expect(trainPrompts(rc, { records: [{ ...ok[0]!, boxes: [{ ...box, box: [100, 100, 120, 120] }] }] })).rejects.toThrow(/bad\.jsonl:1: .*box 0 .*lies wholly outside the 64×64 image/);
    const abort = new AbortController();
    abort.abort();
    await expect(trainPrompts(rc, { records: ok, holdout: 0, signal: abort.signal })).rejects.toThrow(/training was interrupted/);
    expect(readFileSync(jsonl, 'utf8')).toContain('shape-0.png');
  }, 300_000);
});

// Issue 11, "Faults": device loss and gpu.close() while work is in flight reject every pending call
// with a GpuError naming the op (for a model, the model call) and saying what happened (WebGPU
// itself rejects with an AbortError whose message is empty); dispose() lets the calls in flight
// finish and refuses new ones; OWL-ViT's text cache never evicts the call filling it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipModel, GpuError, GraphBuilder, OwlVitDetector, RegionClassifier, Tensor, TINY_CLIP, TINY_OWLVIT, openGpu, writeRandomModel, type Gpu } from '../../src/index.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';

const OWL = fixturePath('owlvit_tiny');
const SAMPLE = join(__dirname, '..', '..', 'assets', 'sample.png');
let dir: string;
const at = (...p: string[]) => join(dir, ...p);

beforeAll(() => {
  // Random tiny models with the byte-level tokenizer, for the calls that take strings.
  dir = mkdtempSync(join(tmpdir(), 'ovgpu-faults-'));
  writeRandomModel(at('owl'), 'owlvit', TINY_OWLVIT, 2);
  writeRandomModel(at('clip'), 'clip', TINY_CLIP, 3);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const owlInput = (name: string) => fixtureTensor(loadFixture('owlvit_tiny', 'inputs.safetensors'), name).data;
const predictInputs = () => ({ pixelValues: owlInput('pixel_values') as Float32Array, pixelShape: [2, 3, 32, 32], inputIds: owlInput('input_ids') as Int32Array, idsShape: [6, 16] });

/** A graph big enough that its run is still in flight right after run() returns its promise. */
async function slowPlan(gpu: Gpu) {
  const w = Tensor.from(gpu, new Float32Array(512 * 512).fill(0.001), [512, 512]);
  const g = new GraphBuilder();
  let x = g.input('x', [512, 512]);
  for (let i = 0; i < 6; i++) x = g.matmul(x, g.constant(w));
  g.output('y', x);
  const plan = await g.compile(gpu);
  return { plan, w, x: new Float32Array(512 * 512).fill(1) };
}

/** Every promise rejects with a GpuError whose message matches `message` (not an empty AbortError). */
async function expectAllRejected(pending: Promise<unknown>[], message: RegExp): Promise<void> {
  const settled = await Promise.allSettled(pending);
  for (const s of settled) {
    expect(s.status).toBe('rejected');
    const err = (s as PromiseRejectedResult).reason;
    expect(err, String(err)).toBeInstanceOf(GpuError);
    expect((err as GpuError).message).toMatch(message);
  }
}

describe('faults while work is in flight', () => {
  it('gpu.close() rejects every pending graph run and read with a GpuError naming the op', async () => {
    const gpu = await openGpu();
    const { plan, w, x } = await slowPlan(gpu);
    const runs = [plan.run({ x }), plan.run({ x }), plan.run({ x })];
    const t = Tensor.from(gpu, x, [512, 512]);
    const read = t.read();
    gpu.close();
    await expectAllRejected([...runs], /^graph run: the GPU was closed/);
    await expectAllRejected([read], /^Tensor\.read: the GPU was closed/);
    void w;
  });

  it('device loss (the device destroyed under the Gpu) rejects pending runs and later calls with a GpuError', async () => {
    const gpu = await openGpu();
    const { plan, x } = await slowPlan(gpu);
    const runs = [plan.run({ x }), plan.run({ x })];
    gpu.device.destroy();
    await expectAllRejected(runs, /^graph run: the GPU was closed|^graph run: the device was lost/);
    await expectAllRejected([plan.run({ x })], /^graph run: the GPU was closed|^graph run: the device was lost/);
    expect(() => Tensor.from(gpu, [1], [1])).toThrow(/Tensor\.from: the GPU was closed|the device was lost/);
    gpu.close();
  });

  it('OwlVitDetector: gpu.close() during predict and detect rejects each with a GpuError naming the model call, the low-level error as cause', async () => {
    const gpu = await openGpu();
    const det = await OwlVitDetector.load(gpu, OWL);
    const random = await OwlVitDetector.load(gpu, at('owl'));
    // Plans compiled: the next calls are in flight at once.
    await Promise.all([det.predict(predictInputs()), random.detect([SAMPLE], ['a cat'])]);
    const pending = [det.predict(predictInputs()), random.detect([SAMPLE], ['a cat'])];
    await new Promise((r) => setTimeout(r, 1));
    gpu.close();
    const settled = await bounded(Promise.allSettled(pending));
    const ops = ['OwlVitDetector.predict', 'OwlVitDetector.detect'];
    settled.forEach((s, i) => {
      expect(s.status).toBe('rejected');
      const err = (s as PromiseRejectedResult).reason;
      expect(err).toBeInstanceOf(GpuError);
      expect(err.message).toMatch(new RegExp(`^${ops[i]}: .*the GPU was closed`));
      expect(err.cause, 'the low-level error is kept').toBeInstanceOf(GpuError);
      expect((err.cause as GpuError).op).not.toBe(ops[i]);
    });
    // A call after the close is refused at once, naming the call.
    await expectAllRejected([det.embedText(new Int32Array(16).fill(1), [1, 16])], /^OwlVitDetector\.embedText: the GPU was closed/);
  });

  it('ClipModel and RegionClassifier: gpu.close() during encodeImage / classify names the model call', async () => {
    const gpu = await openGpu();
    const { model, ids, pixels } = await tinyClip(gpu);
    const rc = new RegionClassifier(model, { tokenizer: { encode: () => ids.subarray(0, 16) } });
    const grid = { data: pixels.subarray(0, 3 * 32 * 32), shape: [1, 3, 32, 32] as [number, 3, number, number] };
    await rc.classify(grid, [[0, 0, 16, 16]], { labels: ['a'] }); // plans compiled
    const pending = [model.encodeImage(pixels, [2, 3, 32, 32]), rc.classify({ ...grid, data: grid.data.map((v) => -v) }, [[0, 0, 16, 16]], { labels: ['b'] })];
    await new Promise((r) => setTimeout(r, 1));
    gpu.close();
    const settled = await bounded(Promise.allSettled(pending));
    expect((settled[0] as PromiseRejectedResult).reason?.message).toMatch(/^ClipModel\.encodeImage: .*the GPU was closed/);
    expect((settled[1] as PromiseRejectedResult).reason?.message).toMatch(/^RegionClassifier\.classify: .*the GPU was closed/);
    for (const s of settled) expect((s as PromiseRejectedResult).reason).toBeInstanceOf(GpuError);
  });
});

/** Rejects if `p` has not settled within `ms`: a fault must never leave a call hanging. */
function bounded<T>(p: Promise<T>, ms = 60_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function tinyClip(gpu: Gpu) {
  const io = loadFixture('clip_tiny', 'io.safetensors');
  const model = await ClipModel.load(gpu, fixturePath('clip_tiny', 'weights_hf.safetensors'), { config: JSON.parse(readFileSync(fixturePath('clip_tiny', 'config.json'), 'utf8')) });
  return { model, ids: fixtureTensor(io, 'input_ids_i32').data as Int32Array, pixels: fixtureTensor(io, 'pixel_values').data as Float32Array };
}

/** A call refused after dispose is refused at once (within a second, whatever the load), naming the call. */
async function expectRefusedAtOnce(call: () => Promise<unknown>, message: RegExp): Promise<void> {
  const t0 = performance.now();
  await expectAllRejected([call()], message);
  expect(performance.now() - t0).toBeLessThan(1000);
}

describe('dispose() while calls are in flight: they finish whole, new calls are refused at once, then everything is freed', () => {
  it('OwlVitDetector: predict, detect and embedText in flight finish with the same results as before the dispose', async () => {
    const gpu = await openGpu();
    try {
      const before = gpu.stats();
      const det = await OwlVitDetector.load(gpu, OWL);
      const random = await OwlVitDetector.load(gpu, at('owl'));
      const ids = Int32Array.from({ length: 16 }, (_, i) => [510, 42, 43, 511][i] ?? 0);
      const calls = () => [det.predict(predictInputs()), random.detect([SAMPLE], ['a cat', 'a dog'], { threshold: 0, nms: 0.5 }), det.embedText(ids, [1, 16])] as const;
      const want = await Promise.all(calls());
      // detect runs several steps (embedImage, queryText with the NMS in its plan, postProcess): the later ones start after the dispose.
      const pending = Promise.all(calls());
      det.dispose();
      random.dispose();
      expect(det.disposed).toBe(true);
      expect(gpu.stats().liveBuffers, 'weights stay while calls are in flight').toBeGreaterThan(before.liveBuffers);
      await expectRefusedAtOnce(() => det.predict(predictInputs()), /^OwlVitDetector\.predict: the detector was disposed/);
      await expectRefusedAtOnce(() => random.detect([SAMPLE], ['a cat']), /^OwlVitDetector\.detect: the detector was disposed/);
      const got = await bounded(pending);
      expect(got[0].logits).toEqual(want[0].logits);
      expect(got[0].predBoxes).toEqual(want[0].predBoxes);
      expect(got[1]).toEqual(want[1]);
      expect(got[1][0]!.length).toBeGreaterThan(0);
      expect(got[2]).toEqual(want[2]);
      expect(gpu.stats().liveBuffers, 'freed after the last call').toBe(before.liveBuffers);
      expect(gpu.stats().liveBytes).toBe(before.liveBytes);
      det.dispose(); // a second dispose does nothing
    } finally {
      gpu.close();
    }
  });

  it('OwlVitDetector: dispose() with nothing in flight frees everything at once', async () => {
    const gpu = await openGpu();
    try {
      const before = gpu.stats();
      const det = await OwlVitDetector.load(gpu, OWL);
      await det.predict(predictInputs());
      expect(det.dispose().liveBuffers).toBe(before.liveBuffers);
    } finally {
      gpu.close();
    }
  });

  it('ClipModel: encodeText / encodeImage in flight finish with the same embeddings; new calls are refused', async () => {
    const gpu = await openGpu();
    try {
      const before = gpu.stats();
      const { model, ids, pixels } = await tinyClip(gpu);
      const want = await Promise.all([model.encodeText(ids, [3, 16]), model.encodeImage(pixels, [2, 3, 32, 32])]);
      const pending = Promise.all([model.encodeText(ids, [3, 16]), model.encodeImage(pixels, [2, 3, 32, 32])]);
      model.dispose();
      await expectRefusedAtOnce(() => model.encodeText(ids, [3, 16]), /^ClipModel\.encodeText: the model was disposed/);
      await expectRefusedAtOnce(() => model.runVision(pixels, [2, 3, 32, 32]), /^ClipModel\.runVision: the model was disposed/);
      expect(await bounded(pending)).toEqual(want);
      expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
    } finally {
      gpu.close();
    }
  });

  it('RegionClassifier (and the CLIP its load made): classify in flight finishes; new calls are refused', async () => {
    const gpu = await openGpu();
    try {
      const before = gpu.stats();
      const rc = await RegionClassifier.load(gpu, at('clip'));
      const opts = { labels: ['a cat', 'a dog', 'a car'], attributes: ['red', 'blue'], topK: 2 };
      const calls = () => [rc.classify(SAMPLE, [[10, 10, 100, 100], [50, 20, 300, 200]], opts), rc.classify(SAMPLE, [[0, 0, 160, 120]], { ...opts, resize: 'crop' })] as const;
      const want = await Promise.all(calls());
      const pending = Promise.all(calls());
      rc.dispose();
      await expectRefusedAtOnce(() => rc.classify(SAMPLE, [[0, 0, 16, 16]], opts), /^RegionClassifier\.classify: the classifier was disposed/);
      await expectRefusedAtOnce(() => rc.promptEmbeddings(['x'], ['{}']), /^RegionClassifier\.promptEmbeddings: the classifier was disposed/);
      expect(await bounded(pending)).toEqual(want);
      expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
    } finally {
      gpu.close();
    }
  });
});

describe('OWL-ViT text cache', () => {
  it('a single call with more new queries than the cache holds works, and equals the uncached embeddings', async () => {
    const gpu = await openGpu();
    try {
      const small = await OwlVitDetector.load(gpu, OWL, { textCacheSize: 2 });
      const plain = await OwlVitDetector.load(gpu, OWL);
      const rows = 7;
      const ids = new Int32Array(rows * 16);
      for (let r = 0; r < rows; r++) ids.set([510, 3 + r, 20 + r, 511], r * 16);
      const got = await small.embedText(ids, [rows, 16]);
      const want = await plain.embedText(ids, [rows, 16]);
      expect(got).toEqual(want);
      // Again, now that only the last two are cached.
      expect(await small.embedText(ids, [rows, 16])).toEqual(want);
      small.dispose();
      plain.dispose();
    } finally {
      gpu.close();
    }
  });

  it('the default cache (4096) survives one call of 4100 new queries', async () => {
    const gpu = await openGpu();
    try {
      const det = await OwlVitDetector.load(gpu, OWL);
      const rows = 4100;
      const ids = new Int32Array(rows * 16);
      for (let r = 0; r < rows; r++) ids.set([510, 1 + (r % 500), 1 + Math.floor(r / 500), 511], r * 16);
      const out = await det.embedText(ids, [rows, 16]);
      expect(out.length).toBe(rows * det.config.embedDim);
      expect(out.every(Number.isFinite)).toBe(true);
      det.dispose();
    } finally {
      gpu.close();
    }
  });

  it('the cache size is checked at load', async () => {
    const gpu = await openGpu();
    try {
      await expect(OwlVitDetector.load(gpu, OWL, { textCacheSize: -1 })).rejects.toThrow(/textCacheSize must be a non-negative integer/);
    } finally {
      gpu.close();
    }
  });
});

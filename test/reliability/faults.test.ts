// Issue 11, "Faults": device loss, gpu.close() and dispose() while work is in flight reject every
// pending call with a GpuError naming the op and saying what happened (WebGPU itself rejects with
// an AbortError whose message is empty); OWL-ViT's text cache never evicts the call filling it.
import { describe, expect, it } from 'vitest';
import { ClipModel, GpuError, GraphBuilder, OwlVitDetector, Tensor, openGpu, type Gpu } from '../../src/index.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';

const OWL = fixturePath('owlvit_tiny');
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

  it('OwlVitDetector: gpu.close() during predict and detect rejects each with a GpuError', async () => {
    const gpu = await openGpu();
    const det = await OwlVitDetector.load(gpu, OWL);
    const pending = [det.predict(predictInputs()), det.predict(predictInputs())];
    await new Promise((r) => setTimeout(r, 1));
    gpu.close();
    await expectAllRejected(pending, /the GPU was closed/);
  });

  it('OwlVitDetector.dispose() during predict rejects it with a GpuError saying it was disposed', async () => {
    const gpu = await openGpu();
    try {
      const det = await OwlVitDetector.load(gpu, OWL);
      await det.predict(predictInputs()); // plans compiled: the next call is in flight at once
      const pending = [det.predict(predictInputs()), det.embedText(Int32Array.from({ length: 16 }, (_, i) => [510, 42, 43, 511][i] ?? 0), [1, 16])];
      det.dispose();
      await expectAllRejected(pending, /disposed/);
      expect(gpu.stats().liveBuffers).toBe(0);
    } finally {
      gpu.close();
    }
  });

  it('ClipModel.dispose() during encodeText / encodeImage rejects them with a GpuError', async () => {
    const gpu = await openGpu();
    try {
      const io = loadFixture('clip_tiny', 'io.safetensors');
      const model = await ClipModel.load(gpu, fixturePath('clip_tiny', 'weights_hf.safetensors'), { config: JSON.parse((await import('node:fs')).readFileSync(fixturePath('clip_tiny', 'config.json'), 'utf8')) });
      const ids = fixtureTensor(io, 'input_ids_i32').data as Int32Array;
      const pixels = fixtureTensor(io, 'pixel_values').data as Float32Array;
      await model.encodeText(ids, [3, 16]);
      const pending = [model.encodeText(ids, [3, 16]), model.encodeImage(pixels, [2, 3, 32, 32])];
      model.dispose();
      await expectAllRejected(pending, /disposed/);
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

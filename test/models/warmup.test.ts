// warmUp compiles, without running, the plans of the calls that follow, every pipeline of them
// through createComputePipelineAsync: afterwards the first real call creates no pipeline. Each
// test opens a Gpu of its own, so no earlier test has filled the device's pipeline cache.
import { describe, expect, it } from 'vitest';
import { ClipModel, OwlVitDetector, openGpu, randomModel, TINY_CLIP, TINY_OWLVIT, type Gpu } from '../../src/index.js';
import { randomArray } from '../util/random.js';

async function withGpu(work: (gpu: Gpu) => Promise<void>): Promise<void> {
  const gpu = await openGpu();
  try {
    await work(gpu);
  } finally {
    gpu.close();
  }
}

describe('warmUp', () => {
  it('ClipModel: encodeImage and encodeText at the warmed sizes compile no new pipeline, and leave the same plans', async () => {
    await withGpu(async (gpu) => {
      const clip = await ClipModel.load(gpu, randomModel('clip', TINY_CLIP, 2));
      const pipelines = gpu.cache<GPUComputePipeline>('pipelines');
      expect(pipelines.size).toBe(0);
      await clip.warmUp({ images: 2, texts: 3 });
      const warmed = pipelines.size;
      expect(warmed).toBeGreaterThan(5);
      const { submits, liveBytes, liveBuffers } = gpu.stats();
      const size = TINY_CLIP.vision!.imageSize;
      const image = await clip.encodeImage(randomArray(2 * 3 * size * size, 4), [2, 3, size, size]);
      const text = await clip.encodeText(['a cat', 'a dog', 'a tree']);
      expect([image.length, text.length]).toEqual([2 * TINY_CLIP.embedDim, 3 * TINY_CLIP.embedDim]);
      expect(pipelines.size).toBe(warmed);
      // warmUp ran nothing (the two calls are the first submits) and compiled these calls' plans:
      // no plan of other shapes was compiled now (its buffers would still be live). What the calls
      // added is the staging buffer of the one output each reads, made on first read: the image
      // embeddings of 2 rows and the text embeddings of 4 (3 texts run in the plan of 4 rows).
      expect(gpu.stats().submits - submits).toBe(2);
      expect(gpu.stats().liveBuffers - liveBuffers).toBe(2);
      expect(gpu.stats().liveBytes - liveBytes).toBe((2 + 4) * TINY_CLIP.embedDim * 4);
      clip.dispose();
    });
  });

  it('OwlVitDetector: detect with the warmed number of queries compiles no new pipeline', async () => {
    await withGpu(async (gpu) => {
      const det = await OwlVitDetector.load(gpu, randomModel('owlvit', TINY_OWLVIT, 3));
      const pipelines = gpu.cache<GPUComputePipeline>('pipelines');
      await det.warmUp({ queries: 3 });
      const warmed = pipelines.size;
      expect(warmed).toBeGreaterThan(5);
      const { liveBuffers } = gpu.stats();
      const size = TINY_OWLVIT.vision!.imageSize;
      const found = await det.detect([{ pixelValues: randomArray(3 * size * size, 5), originalSize: [size, size] }], ['cat', 'dog', 'tree'], { threshold: 0 });
      expect(found[0]!.length).toBeGreaterThan(0);
      expect(pipelines.size).toBe(warmed);
      // No plan was compiled now (one would add at least its intermediates, inputs and uniforms):
      // the new buffers are the staging of the 4 outputs read, made on first read (the image's
      // predBoxes, the queries' textEmbeds, the scores' logits and classEmbeds).
      expect(gpu.stats().liveBuffers - liveBuffers).toBe(4);
      det.dispose();
    });
  });

  it('OwlVitDetector: detect of a batch with NMS at the warmed IoU and threshold compiles no new pipeline and no plan', async () => {
    await withGpu(async (gpu) => {
      const det = await OwlVitDetector.load(gpu, randomModel('owlvit', TINY_OWLVIT, 3));
      const pipelines = gpu.cache<GPUComputePipeline>('pipelines');
      await det.warmUp({ images: 2, queries: 2, threshold: 0, nms: 0.3 });
      const warmed = pipelines.size;
      const { liveBuffers, submits } = gpu.stats();
      const size = TINY_OWLVIT.vision!.imageSize;
      const image = (seed: number) => ({ pixelValues: randomArray(3 * size * size, seed), originalSize: [size, size] as [number, number] });
      const found = await det.detect([image(5), image(6)], ['cat', 'dog'], { threshold: 0, nms: 0.3, batchSize: 2 });
      expect(found.every((d) => d.length > 0)).toBe(true);
      expect(pipelines.size).toBe(warmed);
      // Vision, text, then scoring with its NMS; the new buffers: the staging of the 6 outputs read
      // (predBoxes, textEmbeds, logits, classEmbeds and each image's kept boxes).
      expect(gpu.stats().submits - submits).toBe(3);
      expect(gpu.stats().liveBuffers - liveBuffers).toBe(6);
      await expect(det.warmUp({ nms: Number.NaN })).rejects.toThrow(/OwlVitDetector\.warmUp.*threshold and nms must be finite numbers/);
      det.dispose();
    });
  });

  it('refuses counts that are not whole numbers, naming the argument', async () => {
    await withGpu(async (gpu) => {
      const det = await OwlVitDetector.load(gpu, randomModel('owlvit', TINY_OWLVIT, 3));
      await expect(det.warmUp({ queries: 0 })).rejects.toThrow(/OwlVitDetector\.warmUp.*queries must be a positive integer, got 0/);
      const clip = await ClipModel.load(gpu, randomModel('clip', TINY_CLIP, 2));
      await expect(clip.warmUp({ images: 1.5 })).rejects.toThrow(/ClipModel\.warmUp.*images must be a non-negative integer, got 1\.5/);
      det.dispose();
      clip.dispose();
    });
  });
});

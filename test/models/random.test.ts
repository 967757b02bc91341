import { describe, expect, it, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipModel, ClipTokenizer, RegionClassifier, readSafetensors } from '../../src/index.js';
import { TINY_CLIP, TINY_OWLVIT, randomParams, writeRandomModel } from '../../src/models/random.js';
import { useGpu } from '../util/gpu.js';

const getGpu = useGpu();
const root = mkdtempSync(join(tmpdir(), 'ovgpu-random-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('random-weight models', () => {
  it('writes a deterministic HF-layout OWL-ViT whose towers and tokenizer load', async () => {
    const a = join(root, 'a');
    const b = join(root, 'b');
    writeRandomModel(a, 'owlvit', TINY_OWLVIT, 7);
    writeRandomModel(b, 'owlvit', TINY_OWLVIT, 7);
    expect(readFileSync(join(a, 'model.safetensors')).equals(readFileSync(join(b, 'model.safetensors')))).toBe(true);
    const tensors = await readSafetensors(join(a, 'model.safetensors'));
    expect([...tensors.keys()].sort()).toEqual(randomParams('owlvit', TINY_OWLVIT).map((p) => p.name).sort());
    expect(tensors.get('owlvit.vision_model.embeddings.position_embedding.weight')!.shape).toEqual([65, 64]);
    expect(tensors.get('box_head.dense2.weight')!.shape).toEqual([4, 64]);
    const config = JSON.parse(readFileSync(join(a, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ model_type: 'owlvit', projection_dim: 64, vision_config: { image_size: 256, patch_size: 32 }, text_config: { vocab_size: 514, eos_token_id: 513 } });

    // Every byte is a token: "a red" → SOT, a</w>, r, e, d</w>, EOT.
    const tok = await ClipTokenizer.load(a);
    const ids = tok.encode('a red', { contextLength: 8 });
    // Printable bytes come first in the byte table ('!' = id 0), then the same with '</w>' (+256).
    const byte = (ch: string) => ch.charCodeAt(0) - 0x21;
    expect(Array.from(ids)).toEqual([512, 256 + byte('a'), byte('r'), byte('e'), 256 + byte('d'), 513, 0, 0]);
  });

  it('a random CLIP folder drives the RegionClassifier end to end', async () => {
    const dir = join(root, 'clip');
    writeRandomModel(dir, 'clip', TINY_CLIP, 3);
    const rc = await RegionClassifier.load(await getGpu(), dir);
    expect(rc.clip).toBeInstanceOf(ClipModel);
    expect(rc.clip.unusedWeights).toEqual([]);
    const pixels = { data: new Float32Array(3 * 64 * 64).fill(0.1), shape: [1, 3, 64, 64] as [1, 3, number, number] };
    const [r] = await rc.classify(pixels, [[0, 0, 64, 64]], { labels: ['cat', 'dog'], attributes: ['red'] });
    expect(r!.categories.map((c) => c.name).sort()).toEqual(['cat', 'dog']);
    expect(r!.categories[0]!.score + r!.categories[1]!.score).toBeCloseTo(1, 5);
    expect(r!.attributes).toEqual([expect.objectContaining({ name: 'red', score: 1 })]);
    rc.dispose();
  });
});

// The setup of the OWL-ViT and OWLv2 `detect` tests: a tiny fixture's detector with a tokenizer
// small enough for its 512 ids, and a temporary folder for the images a test writes.
import { beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipTokenizer, OwlVitDetector, type Gpu } from '../../src/index.js';

/** Single letters (a, c, d, g, o, t), no merges, SOT 510 / EOT 511 as the tiny fixtures. */
export function letterTokenizer(): ClipTokenizer {
  const vocab: Record<string, number> = { '<|startoftext|>': 510, '<|endoftext|>': 511 };
  [...'acdgot'].forEach((c, i) => ((vocab[c] = 1 + 2 * i), (vocab[`${c}</w>`] = 2 + 2 * i)));
  return ClipTokenizer.fromHuggingFace(vocab, '#version: 0.2\n');
}

/**
 * Loads the detector in `modelDir` with letterTokenizer() and makes a temporary folder before the
 * suite's tests; disposes and removes them after. The getters are valid inside the tests.
 */
export function useDetector(getGpu: () => Promise<Gpu>, modelDir: string): { tokenizer: ClipTokenizer; det: () => OwlVitDetector; dir: () => string } {
  const tokenizer = letterTokenizer();
  let det: OwlVitDetector | undefined;
  let dir: string | undefined;
  beforeAll(async () => {
    det = await OwlVitDetector.load(await getGpu(), modelDir, { tokenizer });
    dir = mkdtempSync(join(tmpdir(), 'ovgpu-detect-'));
  });
  afterAll(() => {
    det?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return { tokenizer, det: () => det!, dir: () => dir! };
}

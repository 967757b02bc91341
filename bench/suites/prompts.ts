// `prompts` suite: prompt learning on fixed region embeddings (issue 16's shapes): one training step
// (forward through the text tower for 80 category and 100 attribute prompts, backward, Adam: one
// submit) at batch 64, and one classification of 100 boxes with learned prompts. ViT-B/32 with
// random weights (--quick: the tiny CLIP).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegionClassifier } from '../../src/models/region/index.js';
import { ClipModel } from '../../src/models/clip/model.js';
import { PromptLearner, PromptObjective, clipIdentity, promptSetOf, type LearnedPrompts } from '../../src/models/prompts/index.js';
import { TINY_CLIP, vitB32, writeRandomModel } from '../../src/models/random.js';
import type { QueryTokenizer } from '../../src/models/inputs.js';
import { randomArray } from '../../test/util/random.js';
import { matches, timeAsync, type BenchRow } from '../harness.js';
import type { Suite } from '../main.js';
import { callRow, failedRow } from './common.js';

/** Words to ids by a string hash (the random checkpoints have no BPE files): SOT, words, EOT, zeros. */
function hashTokenizer(vocab: number): QueryTokenizer {
  return {
    encode(text, options = {}) {
      const row = new Int32Array(options.contextLength ?? 77);
      const words = text.split(/\s+|(?=\.)/).filter(Boolean).map((w) => [...w].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % (vocab - 2), 7));
      const ids = [vocab - 2, ...words, vocab - 1];
      if (ids.length > row.length) throw new Error(`${text} is too long`);
      row.set(ids);
      return row;
    },
  };
}

export const promptsSuite: Suite = async (ctx) => {
  const { gpu, log } = ctx;
  const config = ctx.quick ? TINY_CLIP : vitB32('clip');
  const name = ctx.quick ? 'tiny CLIP (quick)' : 'ViT-B/32';
  // The shapes in both modes: --quick only swaps the model for the tiny CLIP.
  const [nc, na, batch, nCtx, boxes] = [80, 100, 64, 16, 100];
  const want = (label: string) => matches(ctx.filter, 'prompts', label);
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'ovgpu-bench-prompts-'));
  let rc: RegionClassifier | undefined;
  const learners: PromptLearner[] = [];
  try {
    writeRandomModel(dir, 'clip', config, 1);
    const tokenizer = hashTokenizer(config.text!.vocabSize);
    rc = new RegionClassifier(await ClipModel.load(gpu, dir), { tokenizer });
    const clip = rc.clip;
    const categories = Array.from({ length: nc }, (_, i) => `category ${i}`);
    const attributes = Array.from({ length: na }, (_, i) => `attribute ${i}`);
    const cat = await PromptLearner.create(clip, categories, { nCtx, tokenizer });
    learners.push(cat);
    const attr = await PromptLearner.create(clip, attributes, { nCtx, tokenizer });
    learners.push(attr);
    const e = config.embedDim;
    const stepLabel = `${name} prompt training step: ${nc} categories + ${na} attributes, n_ctx ${nCtx}, batch ${batch} regions (forward, backward, Adam)`;
    if (want(stepLabel)) {
      const objective = new PromptObjective({ categories: cat, attributes: attr });
      try {
        const regions = randomArray(batch * e, 5);
        const labels = { categories: Int32Array.from({ length: batch }, (_, i) => i % nc), attributes: Int8Array.from({ length: batch * na }, (_, i) => [1, 0, 0, -1][i % 4]!) };
        const timing = await timeAsync(() => objective.step(regions, labels), { ...ctx.settings, trials: Math.min(ctx.settings.trials, 3) });
        rows.push(callRow('prompts', stepLabel, timing, { shape: `${nc + na} prompts × ${cat.length}/${attr.length} tokens` }));
        notes.push(`${stepLabel}: ${(1000 / timing.wallMs).toFixed(2)} steps/s`);
        log(`${stepLabel}: ${timing.wallMs.toFixed(1)} ms, ${(1000 / timing.wallMs).toFixed(2)} steps/s`);
      } catch (err) {
        rows.push(failedRow('prompts', stepLabel, err));
      } finally {
        objective.dispose();
      }
    }
    const classifyLabel = `${name} classify ${boxes} boxes with learned prompts (${nc} categories, ${na} attributes), image tower included`;
    if (want(classifyLabel)) {
      try {
        const prompts: LearnedPrompts = { clip: clipIdentity(clip), categories: await promptSetOf(cat), attributes: await promptSetOf(attr) };
        const s = config.vision!.imageSize;
        const r = randomArray(boxes * 4, 6);
        const list = Array.from({ length: boxes }, (_, i) => {
          const [x, y, w, h] = [0, 1, 2, 3].map((k) => (r[i * 4 + k]! + 1) / 2);
          return [x! * s * 0.5, y! * s * 0.5, x! * s * 0.5 + 1 + w! * s * 0.5, y! * s * 0.5 + 1 + h! * s * 0.5] as const;
        });
        let seed = 7;
        // A new image per call, so each call runs the image tower, the box head and the top-k.
        const timing = await timeAsync(() => rc!.classify({ data: randomArray(3 * s * s, seed++), shape: [1, 3, s, s] }, list, { prompts }), { ...ctx.settings, trials: Math.min(ctx.settings.trials, 3) });
        rows.push(callRow('prompts', classifyLabel, timing, { shape: `[${boxes}, ${nc}] + [${boxes}, ${na}]` }));
        log(`${classifyLabel}: ${timing.wallMs.toFixed(1)} ms`);
      } catch (err) {
        rows.push(failedRow('prompts', classifyLabel, err));
      }
    }
  } finally {
    for (const l of learners) l.dispose();
    rc?.dispose();
    rc?.clip.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  notes.push('prompt rows: wall ms per call (host data in, losses / scores read back), each call awaited');
  return { rows, notes };
};

// `ovgpu train-prompts` (learn category and attribute prompts from labelled boxes) and
// `ovgpu eval-attributes` (OVAD-style attribute mAP and category accuracy of predictions).
import { existsSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { Gpu } from '../gpu/gpu.js';
import { RegionClassifier, type RegionResize } from '../models/region/index.js';
import { CLASS_TOKEN_POSITIONS, categoryAccuracy, evaluateAttributes, readPromptRecords, savePrompts, trainPrompts, type ClassTokenPosition, type EpochReport, type PromptRecord } from '../models/prompts/index.js';
import { integerIn, MODEL_COMMAND_FLAGS, numberIn, parseArgs, UsageError } from './args.js';
import { checkConfig, checkDistinctOutputs, checkModelDir, checkOutput, firstLine, writeJson } from './common.js';
import { clipConfigFromHf } from '../models/clip/config.js';
import { weightsSize, withProgress } from './progress.js';

export const TRAIN_PROMPTS_USAGE = `usage: ovgpu train-prompts --model <clip dir> --data <train.jsonl> --out <prompts.safetensors> [options]
  --data FILE          JSONL, one image per line: { "image": "a.jpg", "boxes": [{ "box": [x1, y1, x2, y2],
                       "category": "cat", "attributes": { "furry": 1, "wet": 0, "red": -1 } }] }
                       (1 present, 0 absent, -1 unknown; images relative to the file)
  --out FILE           learned prompts (safetensors; replaced only when training completes)
  --category NAME      category vocabulary (repeatable; default: the data's categories)
  --attribute NAME     attribute vocabulary (repeatable; default: the data's attributes)
  --n-ctx N            context vectors per prompt (default 16)
  --init PHRASE        start the context from a phrase, e.g. "a photo of a" (sets n-ctx)
  --class-specific     one context per class instead of one shared
  --position P         class name at the end (default), middle or front
  --epochs N           (default 10)   --batch N   region embeddings per step (default 32)
  --lr X               Adam learning rate (default 0.002)
  --holdout F          fraction of images held out for validation and early stop (default 0.2)
  --patience N         epochs without a better held-out loss before stopping (default 3)
  --positive-weight X  weight of positive attribute labels (default 1)
  --attribute-weight X weight of the attribute loss (default 1)
  --seed N             split, shuffles and initialisation (default 1)
  --resize squash|crop how images meet the model's square input (default squash)
  --dtype f32|f16      weight storage (default f32)
  --json FILE          write the per-epoch history as JSON ('-' for stdout)`;

export const EVAL_ATTRIBUTES_USAGE = `usage: ovgpu eval-attributes <predictions.json> <annotations.jsonl> [--groups groups.json] [--json FILE]
  predictions: the JSON of \`ovgpu classify-regions --data annotations.jsonl --json FILE\` (one record per
  annotation line, boxes in the same order, with "scores": { "categories": {…}, "attributes": {…} })
  --groups FILE        JSON { "attribute": "head" | "medium" | "tail", … }: mAP per group
  --json FILE          write the full result ('-' for stdout)`;

const TRAIN_FLAGS = {
  '--model': 'string',
  '--data': 'string',
  '--category': 'list',
  '--attribute': 'list',
  '--n-ctx': 'number',
  '--init': 'string',
  '--class-specific': 'boolean',
  '--position': 'string',
  '--epochs': 'number',
  '--batch': 'number',
  '--lr': 'number',
  '--holdout': 'number',
  '--patience': 'number',
  '--positive-weight': 'number',
  '--attribute-weight': 'number',
  '--seed': 'number',
  '--resize': 'string',
  ...MODEL_COMMAND_FLAGS,
} as const;

/** One epoch as a line: training loss and accuracy, held-out loss, accuracy and attribute mAP. */
function epochLine(e: EpochReport, epochs: number): string {
  const f = (v: number | null | undefined) => (v === null || v === undefined ? '-' : v.toFixed(3));
  const held = e.heldOutLoss === undefined ? '' : ` | held-out loss ${f(e.heldOutLoss)} acc ${f(e.heldOutAccuracy)} mAP ${f(e.heldOutMAP)}`;
  return `epoch ${e.epoch}/${epochs}  loss ${f(e.loss)} acc ${f(e.accuracy)}${held}  (${e.steps} steps, ${e.seconds.toFixed(1)} s)`;
}

export async function trainPromptsCommand(argv: string[], openGpu: (backend?: string, adapter?: string) => Promise<Gpu>): Promise<void> {
  const args = parseArgs(argv, TRAIN_FLAGS);
  if (args.positional.length) throw new UsageError(`train-prompts takes no positional arguments, got ${args.positional[0]}`);
  const need = (flag: string, what: string) => args.strings.get(flag) ?? (() => { throw new UsageError(`train-prompts needs ${flag} ${what}`); })();
  const model = need('--model', '<clip folder>');
  const data = need('--data', '<train.jsonl>');
  const out = need('--out', '<prompts.safetensors>');
  const position = (args.strings.get('--position') ?? 'end') as ClassTokenPosition;
  if (!CLASS_TOKEN_POSITIONS.includes(position)) throw new UsageError(`--position must be one of ${CLASS_TOKEN_POSITIONS.join(', ')}, got ${position}`);
  const resize = (args.strings.get('--resize') ?? 'squash') as RegionResize;
  if (resize !== 'squash' && resize !== 'crop') throw new UsageError(`--resize must be squash or crop, got ${resize}`);
  const dtype = args.strings.get('--dtype') ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got ${dtype}`);
  const epochs = integerIn(args, '--epochs', 1, 1e6, 10)!;
  const options = {
    nCtx: integerIn(args, '--n-ctx', 1, 1e4),
    init: args.strings.get('--init'),
    classSpecific: args.booleans.has('--class-specific'),
    position,
    epochs,
    batchSize: integerIn(args, '--batch', 1, 1e6),
    lr: numberIn(args, '--lr', Number.MIN_VALUE, 1e3),
    holdout: numberIn(args, '--holdout', 0, 0.99),
    patience: integerIn(args, '--patience', 1, 1e6),
    positiveWeight: numberIn(args, '--positive-weight', 0, 1e6),
    attributeWeight: numberIn(args, '--attribute-weight', 0, 1e6),
    seed: integerIn(args, '--seed', 0, 2 ** 31),
    categories: args.lists.get('--category'),
    attributes: args.lists.get('--attribute'),
    resize,
  };
  checkModelDir(model);
  checkConfig(model, clipConfigFromHf);
  if (!existsSync(data)) throw new UsageError(`--data ${data} not found`);
  checkOutput('--out', out);
  const json = args.strings.get('--json');
  if (json && json !== '-') checkOutput('--json', json);
  if (json && json !== '-') checkDistinctOutputs([{ flag: '--out', path: out }, { flag: '--json', path: json }]);
  const records = readPromptRecords(data);

  const gpu = await openGpu(args.strings.get('--backend'), args.strings.get('--adapter'));
  // Ctrl-C stops between steps; the prompt file is written only after the last epoch.
  const abort = new AbortController();
  const onInterrupt = () => abort.abort();
  process.once('SIGINT', onInterrupt);
  const tty = process.stderr.isTTY;
  try {
    const rc = await withProgress(`loading CLIP from ${model} (${weightsSize(model)})`, () => RegionClassifier.load(gpu, model, { dtype }));
    try {
      let epoch = 1;
      const result = await trainPrompts(rc, {
        ...options,
        records,
        signal: abort.signal,
        onStep: (step, steps, r) => {
          if (!tty) return;
          const done = Math.round((20 * step) / steps);
          process.stderr.write(`\repoch ${epoch}/${epochs} [${'#'.repeat(done)}${'.'.repeat(20 - done)}] ${step}/${steps} loss ${r.loss.toFixed(3)}`);
        },
        onEpoch: (e) => {
          process.stderr.write(`${tty ? '\r\x1b[K' : ''}${epochLine(e, epochs)}\n`);
          epoch = e.epoch + 1;
        },
      });
      savePrompts(out, result.prompts);
      const best = result.history[result.bestEpoch - 1]!;
      const t = result.templates;
      const vs = (v: number | null | undefined, ref: number | null | undefined) => `${v?.toFixed(3) ?? '-'}${t ? ` (templates ${ref?.toFixed(3) ?? '-'})` : ''}`;
      if (json !== '-') {
        console.log(`${result.counts.train} training and ${result.counts.heldOut} held-out boxes; best epoch ${result.bestEpoch}${result.stoppedEarly ? ' (stopped early)' : ''}`);
        if (t) console.log(`held-out category accuracy ${vs(best.heldOutAccuracy, t.heldOutAccuracy)}, attribute mAP ${vs(best.heldOutMAP, t.heldOutMAP)}`);
        console.log(`wrote ${out}`);
      }
      if (json) writeJson(json, { model, data, out, ...result, prompts: undefined });
    } finally {
      rc.dispose();
    }
  } catch (err) {
    if (abort.signal.aborted) {
      console.error(`${tty ? '\n' : ''}ovgpu: interrupted; ${out} left as it was`);
      process.exitCode = 130;
      return;
    }
    throw err;
  } finally {
    process.off('SIGINT', onInterrupt);
    gpu.close();
  }
}

interface PredictedBox {
  box?: number[];
  scores?: { categories?: Record<string, number>; attributes?: Record<string, number> };
}

/** Records of a JSON array (or JSONL) of { image, boxes: [{ scores }] }. */
function readPredictions(path: string): { image?: string; boxes: PredictedBox[] }[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${firstLine(err)}`);
  }
  try {
    const json = text.trimStart().startsWith('[') ? JSON.parse(text) : text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    if (!Array.isArray(json) || !json.every((r) => Array.isArray(r?.boxes))) throw new Error('expected a list of { image, boxes: [...] }');
    return json;
  } catch (err) {
    throw new UsageError(`${path}: ${firstLine(err)}`);
  }
}

export async function evalAttributesCommand(argv: string[]): Promise<void> {
  const args = parseArgs(argv, { '--groups': 'string', '--json': 'string' });
  if (args.positional.length !== 2) throw new UsageError(`eval-attributes takes <predictions.json> <annotations.jsonl>, got ${args.positional.length} arguments`);
  const [predPath, annPath] = args.positional as [string, string];
  const json = args.strings.get('--json');
  if (json && json !== '-') checkOutput('--json', json);
  const predictions = readPredictions(predPath);
  const annotations = readAnnotations(annPath);
  if (predictions.length !== annotations.length) throw new UsageError(`${predPath} has ${predictions.length} records, ${annPath} ${annotations.length}: one prediction record per annotation line`);
  const attributes = [...new Set(annotations.flatMap((r) => r.boxes.flatMap((b) => Object.keys(b.attributes ?? {}))))];
  const categories = [...new Set(annotations.flatMap((r) => r.boxes.flatMap((b) => (b.category === undefined ? [] : [b.category]))))];
  const scores: number[] = [];
  const labels: number[] = [];
  const catScores: number[] = [];
  const catLabels: number[] = [];
  annotations.forEach((r, i) => {
    const p = predictions[i]!;
    const where = `${predPath} record ${i + 1}`;
    if (p.image !== undefined && typeof r.image === 'string' && basename(p.image) !== basename(r.image)) throw new UsageError(`${where} is for ${p.image}, ${r.source} for ${r.image}`);
    if (p.boxes.length !== r.boxes.length) throw new UsageError(`${where} has ${p.boxes.length} boxes, ${r.source} ${r.boxes.length}`);
    r.boxes.forEach((b, j) => {
      const s = p.boxes[j]!.scores ?? {};
      for (const a of attributes) {
        const v = s.attributes?.[a];
        if (typeof v !== 'number') throw new UsageError(`${where} box ${j} has no score for attribute ${JSON.stringify(a)}`);
        scores.push(v);
        labels.push(b.attributes?.[a] ?? -1);
      }
      if (categories.length && s.categories) {
        for (const c of categories) {
          const v = s.categories[c];
          if (typeof v !== 'number') throw new UsageError(`${where} box ${j} has no score for category ${JSON.stringify(c)}`);
          catScores.push(v);
        }
        catLabels.push(b.category === undefined ? -1 : categories.indexOf(b.category));
      }
    });
  });
  let groups: string[] | undefined;
  const groupsPath = args.strings.get('--groups');
  if (groupsPath) {
    let map: Record<string, string>;
    try {
      map = JSON.parse(readFileSync(groupsPath, 'utf8'));
    } catch (err) {
      throw new UsageError(`--groups ${groupsPath}: ${firstLine(err)}`);
    }
    groups = attributes.map((a) => {
      if (typeof map[a] !== 'string') throw new UsageError(`--groups ${groupsPath} names no group for attribute ${JSON.stringify(a)}`);
      return map[a];
    });
  }
  const result = attributes.length ? evaluateAttributes({ scores, labels, attributes, groups }) : undefined;
  const accuracy = catLabels.length ? categoryAccuracy(catScores, catLabels, categories.length, [1, 5]) : undefined;
  const f = (v: number | null | undefined) => (v === null || v === undefined ? '-' : v.toFixed(4));
  if (json !== '-') {
    if (result) {
      console.log(`attribute mAP ${f(result.mAP)} over ${attributes.length - result.excluded.length} attributes`);
      if (result.groups) console.log(Object.entries(result.groups).map(([g, v]) => `  ${g} mAP ${f(v)}`).join('\n'));
      if (result.excluded.length) console.log(`excluded (no positive box): ${result.excluded.join(', ')}`);
    }
    if (accuracy) console.log(`category top-1 ${f(accuracy.top[1])}, top-5 ${f(accuracy.top[5])} over ${accuracy.count} boxes`);
  }
  if (json) writeJson(json, { attributes: result, categories: accuracy });
}

/** Annotation lines as training records, without requiring the images. */
function readAnnotations(path: string): PromptRecord[] {
  if (!existsSync(path)) throw new UsageError(`annotations ${path} not found`);
  return readPromptRecords(path, { checkImages: false });
}

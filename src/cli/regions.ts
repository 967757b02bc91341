// `ovgpu classify-regions <image> --model <clip dir> --boxes boxes.json --label … [--attribute …]`
import { existsSync, readFileSync } from 'node:fs';
import type { Gpu } from '../gpu/gpu.js';
import { DEFAULT_ATTRIBUTE_TEMPLATES, DEFAULT_TEMPLATES, promptTexts, RegionClassifier, type Box, type RegionResize } from '../models/region/index.js';
import { clipConfigFromHf } from '../models/clip/config.js';
import { readPromptRecords, readPrompts, type LearnedPrompts } from '../models/prompts/index.js';
import { clipBox } from '../models/inputs.js';
import { MAX_TOP_K } from '../kernels/regionWordSimilarity.js';
import { integerIn, MODEL_COMMAND_FLAGS, parseArgs, UsageError } from './args.js';
import { writeAnnotated } from './annotate.js';
import { checkConfig, checkDistinctOutputs, checkImage, checkModelDir, checkOutput, checkTexts, firstLine, OutputFiles, round, writeJson } from './common.js';
import { weightsSize, withProgress } from './progress.js';

export const REGIONS_USAGE = `usage: ovgpu classify-regions <image> --model <clip dir> --boxes <boxes.json> --label <name>… [options]
       ovgpu classify-regions --data <boxes.jsonl> --model <clip dir> --prompts <prompts.safetensors> --json FILE
  --model DIR          CLIP checkpoint folder (config.json, model.safetensors, tokenizer files)
  --boxes FILE         JSON: [[x1, y1, x2, y2], …], [{ "box": [...] }, …] or the JSON of ovgpu detect
  --label NAME         a category (repeat the flag for each)
  --prompts FILE       learned prompts (ovgpu train-prompts) for the categories and attributes
  --data FILE          JSONL of { "image", "boxes": [{ "box" }] } (train-prompts' format): every box, with
                       every category's and attribute's score, as JSON records (for ovgpu eval-attributes)
  --attribute NAME     an attribute to score (repeatable)
  --template T         prompt template with {} (repeatable; default "a photo of a {}.")
  --top N              categories and attributes per box (default 3)
  --resize squash|crop how the image meets the model's square input (default squash)
  --truncate           cut prompts longer than the model's context (default: refuse them)
  --dtype f32|f16      weight storage (default f32)
  --json FILE          write the results as JSON ('-' for stdout)
  --out FILE           write the image with boxes and top labels (PNG)`;

const FLAGS = {
  '--model': 'string',
  '--boxes': 'string',
  '--label': 'list',
  '--attribute': 'list',
  '--template': 'list',
  '--top': 'number',
  '--resize': 'string',
  '--truncate': 'boolean',
  '--prompts': 'string',
  '--data': 'string',
  ...MODEL_COMMAND_FLAGS,
} as const;

/** A prompt file, read before the model loads (a bad one is bad input). */
async function readPromptFile(path: string): Promise<LearnedPrompts> {
  if (!existsSync(path)) throw new UsageError(`--prompts ${path} not found`);
  return readPrompts(path);
}

/** Boxes from a JSON file in one of the accepted forms (each checked later by clipBox, which names it). */
function readBoxes(path: string): unknown[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UsageError(`cannot read boxes from ${path}: ${firstLine(err)}`);
  }
  // The output of `ovgpu detect --json`: the first image's detections.
  const detected = (json as { images?: { detections?: unknown }[] })?.images?.[0]?.detections;
  const list = detected ?? json;
  if (!Array.isArray(list)) throw new UsageError(`${path}: expected a list of boxes [x1, y1, x2, y2] (or objects with "box")`);
  return list.map((item) => (Array.isArray(item) ? item : ((item as { box?: unknown })?.box ?? item)));
}

export async function classifyRegions(argv: string[], openGpu: (backend?: string, adapter?: string) => Promise<Gpu>): Promise<void> {
  const args = parseArgs(argv, FLAGS);
  const dataPath = args.strings.get('--data');
  if (args.positional.length !== (dataPath ? 0 : 1)) throw new UsageError(dataPath ? 'classify-regions --data takes no image argument' : `classify-regions takes one image, got ${args.positional.length}`);
  const image = args.positional[0]!;
  const model = args.strings.get('--model');
  if (!model) throw new UsageError('classify-regions needs --model <clip folder>');
  const boxesPath = args.strings.get('--boxes');
  if (!boxesPath && !dataPath) throw new UsageError('classify-regions needs --boxes <boxes.json>');
  const promptsPath = args.strings.get('--prompts');
  const learned = promptsPath ? await readPromptFile(promptsPath) : undefined;
  const labels = args.lists.get('--label') ?? [];
  if (labels.length === 0 && !learned?.categories) throw new UsageError('classify-regions needs at least one --label (or --prompts with categories)');
  if (labels.length && learned?.categories) throw new UsageError(`--label and --prompts: ${promptsPath} holds the categories`);
  const resize = (args.strings.get('--resize') ?? 'squash') as RegionResize;
  if (resize !== 'squash' && resize !== 'crop') throw new UsageError(`--resize must be squash or crop, got ${resize}`);
  const dtype = args.strings.get('--dtype') ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got ${dtype}`);
  const topK = integerIn(args, '--top', 1, MAX_TOP_K, 3)!;
  for (const t of args.lists.get('--template') ?? []) if (!t.includes('{}')) throw new UsageError(`--template ${JSON.stringify(t)} has no {} to put the label in`);
  checkModelDir(model);
  const config = checkConfig(model, clipConfigFromHf);
  if (!config.vision) throw new UsageError(`${model}: the CLIP checkpoint has no vision tower`);
  const json = args.strings.get('--json');
  const out = args.strings.get('--out');
  if (json && json !== '-') checkOutput('--json', json);
  if (out) checkOutput('--out', out);
  if (json && json !== '-' && out) checkDistinctOutputs([{ flag: '--json', path: json }, { flag: '--out', path: out }]);
  const attributes = args.lists.get('--attribute') ?? [];
  if (attributes.length && learned?.attributes) throw new UsageError(`--attribute and --prompts: ${promptsPath} holds the attributes`);
  if (dataPath) {
    if (!json) throw new UsageError('classify-regions --data needs --json FILE (or - for stdout)');
    const records = readPromptRecords(dataPath);
    const gpu = await openGpu(args.strings.get('--backend'), args.strings.get('--adapter'));
    try {
      const rc = await withProgress(`loading CLIP from ${model} (${weightsSize(model)})`, () => RegionClassifier.load(gpu, model, { dtype }));
      try {
        const out = [];
        for (const r of records) {
          const results = await rc.classify(r.image, r.boxes.map((b) => b.box), { labels, attributes, templates: args.lists.get('--template'), prompts: learned && promptsPath, topK, resize, truncate: args.booleans.has('--truncate'), allScores: true });
          out.push({ image: r.image, boxes: results.map(({ box, scores }) => ({ box, scores })) });
        }
        // Under a temporary name until written whole, as every output.
        const files = new OutputFiles();
        try {
          writeJson(json === '-' ? '-' : files.temp(json), out);
          files.commit();
        } finally {
          files.discard();
        }
        if (json !== '-') console.error(`wrote ${json} (${records.length} images)`);
      } finally {
        rc.dispose();
      }
    } finally {
      gpu.close();
    }
    return;
  }
  const { width, height } = await checkImage(image);
  const boxes = readBoxes(boxesPath!) as Box[];
  // Boxes and prompts the classifier would refuse, refused before the model loads.
  boxes.forEach((b, i) => clipBox('--boxes', `${boxesPath}: box ${i}`, b, width, height));
  const templates = args.lists.get('--template') ?? DEFAULT_TEMPLATES;
  const truncate = args.booleans.has('--truncate');
  const texts = [...promptTexts(labels, templates), ...promptTexts(attributes, DEFAULT_ATTRIBUTE_TEMPLATES)];
  const tokenizer = await checkTexts(model, config.text?.contextLength, texts, truncate);

  const gpu = await openGpu(args.strings.get('--backend'), args.strings.get('--adapter'));
  try {
    const rc = await withProgress(`loading CLIP from ${model} (${weightsSize(model)})`, () => RegionClassifier.load(gpu, model, { dtype, tokenizer }));
    const results = await rc.classify(image, boxes, { labels, attributes, templates, topK, resize, truncate, prompts: learned && promptsPath });
    // With --json - stdout carries the JSON alone.
    if (json !== '-') for (const r of results) {
      const fmt = (xs: { name: string; score: number }[]) => xs.map((c) => `${c.name} ${c.score.toFixed(3)}`).join(', ');
      console.log(`[${r.box.map((v) => round(v, 1)).join(', ')}]  ${fmt(r.categories)}${r.attributes.length ? `  | ${fmt(r.attributes)}` : ''}`);
    }
    const report = { model, image, resize, regions: results };
    const files = new OutputFiles();
    try {
      if (json && json !== '-') writeJson(files.temp(json), report);
      if (out) {
        await writeAnnotated(
          image,
          files.temp(out),
          results.map((r) => {
            const best = r.categories[0]!;
            const attr = r.attributes[0] ? `${r.attributes[0].name} ` : '';
            return { box: r.box, text: `${attr}${best.name} ${best.score.toFixed(2)}`, color: (learned?.categories?.names ?? labels).indexOf(best.name) };
          }),
        );
      }
      files.commit();
      if (json === '-') writeJson('-', report);
      if (out) console.error(`wrote ${out}`);
    } finally {
      files.discard();
    }
    rc.dispose();
  } finally {
    gpu.close();
  }
}

// `ovgpu segment <image> [--model <clip dir>] --query "a red car" … [--background sky …]
// [--prompt circle,blur] [--threshold 0.45] [--no-crf] --out overlay.png --masks masks/ --json r.json`:
// CaR segmentation. Without --model it runs a tiny random-weight CLIP written once to
// .cache/tiny-car-clip (seeded: the same everywhere), so the whole pipeline runs; its masks are meaningless.
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type { Gpu } from '../gpu/gpu.js';
import { CarSegmenter, checkVisualPromptTypes, type CarSegmentation, type VisualPromptType } from '../models/car/index.js';
import { clipConfigFromHf, type ClipConfig } from '../models/clip/config.js';
import { decodeImage } from '../models/preprocess/index.js';
import { TINY_CLIP } from '../models/random.js';
import { InputError } from '../models/inputs.js';
import { MODEL_COMMAND_FLAGS, numberIn, parseArgs, UsageError } from './args.js';
import { checkConfig, checkImage, checkModelDir, checkOutput, checkTexts, demoModel, OutputFiles, round, writeJson } from './common.js';
import { weightsSize, withProgress } from './progress.js';

export const SEGMENT_USAGE = `usage: ovgpu segment <image> [--model <clip dir>] --query <text>… [options]
  --model DIR          CLIP checkpoint folder (Hugging Face CLIPModel: config.json, model.safetensors,
                       tokenizer files); default: a tiny RANDOM-weight demo model
  --classifier DIR     a second CLIP for mask classification (default: the --model one)
  --query TEXT         a text query (repeat the flag for each)
  --background TEXT    a background class that joins the proposal softmax (repeatable)
  --prompt TYPES       visual prompts, comma-separated: circle, rectangle, contour, blur, gray, black
                       (default circle)
  --threshold X        CaR's confidence threshold in [0, 1] (default 0.45)
  --no-crf             keep the thresholded proposals instead of the dense CRF
  --truncate           cut texts longer than the model's context (default: refuse them)
  --dtype f32|f16      weight storage (default f32)
  --out FILE           write the image with the masks overlaid (PNG)
  --masks DIR          write one mask per query (PNG, 255 inside): DIR/<n>-<query>.png
  --json FILE          write the result as JSON ('-' for stdout)`;

const FLAGS = {
  '--model': 'string',
  '--classifier': 'string',
  '--query': 'list',
  '--background': 'list',
  '--prompt': 'string',
  '--threshold': 'number',
  '--no-crf': 'boolean',
  '--truncate': 'boolean',
  '--masks': 'string',
  ...MODEL_COMMAND_FLAGS,
} as const;

/** The random demo CLIP (.cache/tiny-car-clip): TINY_CLIP with CLIP's 77-token context, so templated queries fit. */
const DEMO_CLIP: ClipConfig = { ...TINY_CLIP, text: { ...TINY_CLIP.text!, contextLength: 77 } };

const COLORS: [number, number, number][] = [
  [230, 25, 75], [60, 180, 75], [67, 99, 216], [245, 130, 49], [145, 30, 180], [66, 212, 244], [240, 50, 230], [154, 99, 36],
];

/** A file-name-safe form of a query. */
const slug = (q: string) => q.replace(/[^\w-]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 40) || 'query';

/** The image with each surviving mask blended in its colour (CaR's demo: 45% colour). */
function overlay(rgb: Uint8Array, channels: number, seg: CarSegmentation): Uint8Array {
  const n = seg.width * seg.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) out[i * 3 + c] = rgb[i * channels + c]!;
  seg.results.forEach((r, q) => {
    if (!r.survived) return;
    const color = COLORS[q % COLORS.length]!;
    for (let i = 0; i < n; i++) if (r.mask[i]) for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round(out[i * 3 + c]! * 0.55 + color[c]! * 0.45);
  });
  return out;
}

export async function segment(argv: string[], openGpu: (backend?: string, adapter?: string) => Promise<Gpu>): Promise<void> {
  const args = parseArgs(argv, FLAGS);
  if (args.positional.length !== 1) throw new UsageError(`segment takes one image, got ${args.positional.length}`);
  const image = args.positional[0]!;
  const queries = args.lists.get('--query') ?? [];
  if (queries.length === 0) throw new UsageError('segment needs at least one --query "text"');
  const background = args.lists.get('--background') ?? [];
  if (background.some((q) => q.trim() === '')) throw new UsageError('a --background is empty');
  let prompts: VisualPromptType[];
  try {
    prompts = checkVisualPromptTypes('--prompt', args.strings.get('--prompt') ?? 'circle');
  } catch (err) {
    throw new UsageError((err as InputError).message);
  }
  const threshold = numberIn(args, '--threshold', 0, 1, 0.45)!;
  const dtype = args.strings.get('--dtype') ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got ${dtype}`);
  const given = args.strings.get('--model');
  if (given) checkModelDir(given);
  const classifierDir = args.strings.get('--classifier');
  if (classifierDir) checkModelDir(classifierDir);
  const json = args.strings.get('--json');
  const out = args.strings.get('--out');
  const masksDir = args.strings.get('--masks');
  if (json && json !== '-') checkOutput('--json', json);
  if (out) checkOutput('--out', out);
  if (masksDir) {
    if (existsSync(masksDir) && !statSync(masksDir).isDirectory()) throw new UsageError(`--masks ${masksDir} is not a folder`);
    if (!existsSync(masksDir)) mkdirSync(masksDir, { recursive: true });
  }
  const maskFiles = queries.map((q, i) => (masksDir ? join(masksDir, `${i + 1}-${slug(q)}.png`) : undefined));
  for (const f of maskFiles) if (f) checkOutput('--masks', f);
  const size = await checkImage(image);

  const model = given ?? (await demoModel('tiny-car-clip', 'clip', DEMO_CLIP));
  const truncate = args.booleans.has('--truncate');
  const context = (dir: string) => checkConfig(dir, clipConfigFromHf).text?.contextLength;
  // Every text the loop embeds is checked before the model loads.
  const texts = [...queries, ...queries.map((q) => `a clean origami ${q}.`), ...background.map((b) => `a clean origami ${b}.`)];
  const tokenizer = await checkTexts(model, context(model), texts, truncate);
  if (classifierDir) await checkTexts(classifierDir, context(classifierDir), texts, truncate);
  const decoded = await decodeImage(image);
  const gpu = await openGpu(args.strings.get('--backend'), args.strings.get('--adapter'));
  try {
    const car = await withProgress(`loading CLIP from ${model} (${weightsSize(model)})`, () =>
      CarSegmenter.load(gpu, model, { clip: { dtype, tokenizer }, classifier: classifierDir, classifierOptions: { dtype } }),
    );
    let seg: CarSegmentation;
    try {
      seg = await car.segment(decoded, queries, {
        background,
        prompts,
        threshold,
        crf: !args.booleans.has('--no-crf'),
        truncate,
        onProgress: (e) => console.error(`stage ${e.stage}: ${e.step} (${e.queries} ${e.step === 'crf' ? 'masks' : 'queries'}) in ${(e.ms / 1000).toFixed(2)} s`),
      });
    } finally {
      car.dispose();
    }
    if (json !== '-') {
      console.log(`${image} (${size.width}×${size.height}): ${seg.iterations} stage${seg.iterations === 1 ? '' : 's'}`);
      for (const r of seg.results) {
        const area = r.mask.reduce((s, v) => s + v, 0);
        console.log(`  ${r.survived ? 'kept   ' : 'dropped'}  ${r.score.toFixed(3)}  ${r.query}  (${round((100 * area) / (seg.width * seg.height), 1)}% of the image)`);
      }
    }
    const files = new OutputFiles();
    try {
      const report = {
        model: given ?? null,
        randomWeights: !given,
        classifier: classifierDir ?? null,
        image,
        width: seg.width,
        height: seg.height,
        background,
        prompts,
        threshold,
        crf: !args.booleans.has('--no-crf'),
        iterations: seg.iterations,
        stages: seg.stages,
        seconds: Object.fromEntries(Object.entries(seg.timings).map(([k, v]) => [k, round(v / 1000, 3)])),
        results: seg.results.map((r, i) => ({ query: r.query, survived: r.survived, score: r.score, pixels: r.mask.reduce((s, v) => s + v, 0), mask: maskFiles[i] ?? null })),
      };
      if (json && json !== '-') writeJson(files.temp(json), report);
      for (const [i, f] of maskFiles.entries()) {
        if (!f) continue;
        const m = Uint8Array.from(seg.results[i]!.mask, (v) => v * 255);
        await sharp(m, { raw: { width: seg.width, height: seg.height, channels: 1 } }).png().toFile(files.temp(f));
      }
      if (out) await sharp(overlay(decoded.data, decoded.channels, seg), { raw: { width: seg.width, height: seg.height, channels: 3 } }).png().toFile(files.temp(out));
      files.commit();
      if (json === '-') writeJson('-', report);
      for (const f of [out, ...maskFiles]) if (f) console.error(`wrote ${f}`);
    } finally {
      files.discard();
    }
    if (!given) {
      console.error(
        [
          '',
          'NOTE: no --model was given, so this ran a tiny CLIP with RANDOM weights: its masks and scores are',
          'meaningless (it only shows that the whole pipeline runs). For real segmentation, put a Hugging Face',
          'CLIPModel checkpoint folder (e.g. openai/clip-vit-base-patch16: config.json, model.safetensors,',
          'tokenizer files) on this machine and add --model /path/to/clip-vit-base-patch16.',
        ].join('\n'),
      );
    }
  } finally {
    gpu.close();
  }
}

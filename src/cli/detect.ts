// `ovgpu detect <image…> [--model <owlvit or owlv2 dir>] --query "a cat" … [--image-query q.jpg]`
// Without --model it runs a tiny random-weight OWL-ViT (or OWLv2 with --model-type owlv2) that the
// project builds on first use (.cache/tiny-owlvit, .cache/tiny-owlv2), to show the whole pipeline
// on any machine; its boxes are meaningless.
import { existsSync } from 'node:fs';
import { relative } from 'node:path';
import type { Gpu } from '../gpu/gpu.js';
import { OwlVitDetector, type Detection } from '../models/owlvit/index.js';
import { RegionClassifier } from '../models/region/index.js';
import { describeBoxes, readPrompts, type DescribedBox } from '../models/prompts/index.js';
import { TINY_OWLVIT, type RandomModelKind } from '../models/random.js';
import { owlVitConfigFromHf } from '../models/owlvit/config.js';
import { clipConfigFromHf } from '../models/clip/config.js';
import { integerIn, MODEL_COMMAND_FLAGS, numberIn, parseArgs, UsageError } from './args.js';
import { writeAnnotated } from './annotate.js';
import { checkConfig, checkDistinctOutputs, checkImage, checkModelDir, checkOutput, checkTexts, demoModel, numberedPath, OutputFiles, round, writeJson } from './common.js';
import { weightsSize, withProgress } from './progress.js';

export const DETECT_USAGE = `usage: ovgpu detect <image…> [--model <owlvit dir>] --query <text>… [options]
  --model DIR          OWL-ViT or OWLv2 checkpoint folder (Hugging Face OwlViTForObjectDetection or
                       Owlv2ForObjectDetection: config.json, model.safetensors, tokenizer files);
                       default: a tiny RANDOM-weight demo model
  --model-type T       the demo model without --model: owlvit (default) or owlv2
  --query TEXT         a text query (repeat the flag for each)
  --image-query FILE   detect what this image shows instead of text queries (image-guided)
  --threshold X        keep detections scoring above X (default 0.1; 0 for --image-query)
  --nms X              class-aware NMS at IoU X (default: off for text, 0.3 for --image-query)
  --objectness X       OWLv2: keep detections whose objectness (0-1) is above X
  --top N              keep only the N best detections per image
  --truncate           cut queries longer than the model's context (default: refuse them)
  --dtype f32|f16      weight storage (default f32)
  --json FILE          write the detections as JSON ('-' for stdout)
  --out FILE           write the image with boxes, labels and scores (PNG; -1, -2, … for several images)
  --attributes FILE    learned prompts (ovgpu train-prompts): each detection's category and attribute
                       probabilities from the region classifier on --clip (OvarNet's task end to end)
  --clip DIR           the CLIP checkpoint the prompts were trained on (needed with --attributes)`;

const FLAGS = {
  '--model': 'string',
  '--query': 'list',
  '--image-query': 'string',
  '--threshold': 'number',
  '--nms': 'number',
  '--objectness': 'number',
  '--model-type': 'string',
  '--top': 'number',
  '--truncate': 'boolean',
  '--attributes': 'string',
  '--clip': 'string',
  ...MODEL_COMMAND_FLAGS,
} as const;

/** The command line as typed, with `--model <dir>` in place of the random model. */
function realModelCommand(argv: readonly string[], kind: RandomModelKind): string {
  const quote = (s: string) => (/^[\w./:=@+-]+$/.test(s) ? s : `"${s.replace(/(["\\$`])/g, '\\$1')}"`);
  const cli = relative(process.cwd(), process.argv[1] ?? 'dist/cli.js') || 'dist/cli.js';
  const args = argv.filter((a, i) => a !== '--model-type' && argv[i - 1] !== '--model-type');
  return ['node', cli, 'detect', ...args.map(quote), '--model', kind === 'owlv2' ? '/path/to/owlv2-base-patch16-ensemble' : '/path/to/owlvit-base-patch32'].join(' ');
}

/** A described box as text: its best category and its likely attributes. */
function describe(d: DescribedBox): string {
  const attrs = Object.entries(d.attributes).filter(([, p]) => p >= 0.5).sort((a, b) => b[1] - a[1]);
  return `${d.categories[0]!.name} ${d.categories[0]!.score.toFixed(2)}${attrs.length ? ` | ${attrs.map(([n, p]) => `${n} ${p.toFixed(2)}`).join(', ')}` : ''}`;
}

/** Detections listed per image on stdout. */
const LISTED = 15;

export async function detect(argv: string[], openGpu: (backend?: string, adapter?: string) => Promise<Gpu>): Promise<void> {
  const args = parseArgs(argv, FLAGS);
  const images = args.positional;
  if (images.length === 0) throw new UsageError('detect needs at least one image');
  const queries = args.lists.get('--query') ?? [];
  const imageQuery = args.strings.get('--image-query');
  if (queries.length === 0 && !imageQuery) throw new UsageError('detect needs at least one --query "text" (or --image-query <image>)');
  if (queries.length > 0 && imageQuery) throw new UsageError('give text queries or --image-query, not both');
  const threshold = numberIn(args, '--threshold', 0, 1, imageQuery ? 0 : 0.1)!;
  const nms = numberIn(args, '--nms', 0, 1, imageQuery ? 0.3 : undefined);
  const top = integerIn(args, '--top', 1, Number.MAX_SAFE_INTEGER);
  const dtype = args.strings.get('--dtype') ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got ${dtype}`);
  const given = args.strings.get('--model');
  if (given) checkModelDir(given, !imageQuery);
  const modelType = args.strings.get('--model-type');
  if (modelType !== undefined && modelType !== 'owlvit' && modelType !== 'owlv2') throw new UsageError(`--model-type must be owlvit or owlv2, got ${modelType}`);
  if (modelType !== undefined && given) throw new UsageError('--model-type picks the demo model: with --model the folder\'s config.json says the type');
  const kind: RandomModelKind = modelType ?? 'owlvit';
  const objectness = numberIn(args, '--objectness', 0, 1);
  const json = args.strings.get('--json');
  const out = args.strings.get('--out');
  if (json && json !== '-') checkOutput('--json', json);
  const pngs = out ? images.map((_, i) => numberedPath(out, i, images.length)) : [];
  for (const file of pngs) checkOutput('--out', file);
  const promptsPath = args.strings.get('--attributes');
  const clipDir = args.strings.get('--clip');
  if (promptsPath && !clipDir) throw new UsageError('--attributes needs --clip <the CLIP folder the prompts were trained on>');
  if (clipDir && !promptsPath) throw new UsageError('--clip is for --attributes <prompts.safetensors>');
  if (promptsPath && !existsSync(promptsPath)) throw new UsageError(`--attributes ${promptsPath} not found`);
  const prompts = promptsPath ? await readPrompts(promptsPath) : undefined;
  if (clipDir) {
    checkModelDir(clipDir);
    checkConfig(clipDir, clipConfigFromHf);
  }
  checkDistinctOutputs([...(json && json !== '-' ? [{ flag: '--json', path: json }] : []), ...pngs.map((path) => ({ flag: '--out', path }))]);
  const sizes: { width: number; height: number }[] = [];
  for (const image of images) sizes.push(await checkImage(image));
  if (imageQuery) await checkImage(imageQuery);

  const model = given ?? (await demoModel(`tiny-${kind}`, kind, TINY_OWLVIT));
  const truncate = args.booleans.has('--truncate');
  // config.json is checked for image queries too: only text queries need the tokenizer.
  const config = checkConfig(model, owlVitConfigFromHf);
  const tokenizer = imageQuery ? undefined : await checkTexts(model, config.text.contextLength, queries, truncate);
  const gpu = await openGpu(args.strings.get('--backend'), args.strings.get('--adapter'));
  try {
    const det = await withProgress(`loading the detector from ${model} (${weightsSize(model)})`, () => OwlVitDetector.load(gpu, model, { dtype, tokenizer }));
    let results: (Detection & { description?: DescribedBox | null })[][];
    try {
      if (objectness !== undefined && det.config.modelType !== 'owlv2') throw new UsageError(`--objectness needs an OWLv2 model; ${model} is OWL-ViT (v1), which has no objectness head`);
      results = await det.detect(images, imageQuery ? { image: imageQuery } : queries, { threshold, nms, topK: top, truncate, objectnessThreshold: objectness });
    } finally {
      det.dispose();
    }
    if (prompts && clipDir) {
      const rc = await withProgress(`loading CLIP from ${clipDir} (${weightsSize(clipDir)})`, () => RegionClassifier.load(gpu, clipDir, { dtype }));
      try {
        results = await Promise.all(results.map((dets, i) => describeBoxes(rc, images[i]!, dets, prompts)));
      } finally {
        rc.dispose();
      }
    }
    // With --json - stdout carries the JSON alone.
    if (json !== '-') results.forEach((dets, i) => {
      console.log(`${images[i]} (${sizes[i]!.width}×${sizes[i]!.height}): ${dets.length} detection${dets.length === 1 ? '' : 's'}`);
      for (const d of dets.slice(0, LISTED)) console.log(`  ${d.score.toFixed(3)}  ${d.query}  [${d.box.map((v) => round(v, 1)).join(', ')}]${d.objectness === undefined ? '' : `  objectness ${d.objectness.toFixed(3)}`}${d.description ? `  ${describe(d.description)}` : ''}`);
      if (dets.length > LISTED) console.log(`  … and ${dets.length - LISTED} more (all of them in --json)`);
    });
    const files = new OutputFiles();
    try {
      const report = {
        model: given ?? null,
        randomWeights: !given,
        queries: imageQuery ? { image: imageQuery } : queries,
        threshold,
        nms: nms ?? null,
        objectnessThreshold: objectness ?? null,
        images: images.map((path, i) => ({ path, ...sizes[i], detections: results[i] })),
      };
      if (json && json !== '-') writeJson(files.temp(json), report);
      for (const [i, file] of pngs.entries()) {
        await writeAnnotated(images[i]!, files.temp(file), results[i]!.map((d) => ({ box: d.box, text: `${d.query} ${d.score.toFixed(2)}`, color: d.label })));
      }
      files.commit();
      if (json === '-') writeJson('-', report);
      for (const file of pngs) console.error(`wrote ${file}`);
    } finally {
      files.discard();
    }
    if (!given) {
      console.error(
        [
          '',
          `NOTE: no --model was given, so this ran a tiny ${kind === 'owlv2' ? 'OWLv2' : 'OWL-ViT'} with RANDOM weights: its boxes and scores are`,
          'meaningless (it only shows that the whole pipeline runs). For real detections, put a Hugging Face',
          kind === 'owlv2'
            ? 'Owlv2ForObjectDetection checkpoint folder (e.g. google/owlv2-base-patch16-ensemble: config.json,'
            : 'OwlViTForObjectDetection checkpoint folder (e.g. google/owlvit-base-patch32: config.json,',
          'model.safetensors, tokenizer files) on this machine and run:',
          `  ${realModelCommand(argv, kind)}`,
        ].join('\n'),
      );
    }
  } finally {
    gpu.close();
  }
}

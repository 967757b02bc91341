// Prompt learning from the user's labelled boxes (OvarNet's CLIP-Attr stage, CoOp's recipe): region
// embeddings from the RegionClassifier computed once, then epochs of Adam steps on the category and
// attribute contexts (one submit per step), a held-out split, early stopping on the held-out loss,
// and the best epoch's prompts returned (save them with savePrompts).
import { Adam } from '../../optim.js';
import { clipLogits } from '../clip/model.js';
import { InputError } from '../inputs.js';
import { DEFAULT_ATTRIBUTE_TEMPLATES, DEFAULT_TEMPLATES, type Box, type RegionClassifier, type RegionImage, type RegionResize } from '../region/classifier.js';
import { categoryAccuracy, evaluateAttributes } from './evaluate.js';
import { clipIdentity, promptSetOf, type LearnedPrompts } from './file.js';
import { PromptLearner, type PromptLearnerOptions } from './learner.js';
import { PromptObjective, type PromptStepResult } from './objective.js';
import { uniform } from '../randomWeights.js';
import { localFiles } from '../../platform/platform.js';

/** One labelled box: category and attributes (1 present, 0 absent, −1 unknown) are each optional. */
export interface PromptBox {
  box: Box;
  category?: string;
  attributes?: Record<string, number>;
}

/** An image and its labelled boxes (one line of the training JSONL). */
export interface PromptRecord {
  image: RegionImage;
  boxes: PromptBox[];
  /** Where the record came from, for messages (e.g. "train.jsonl:3"). */
  source?: string;
}

export interface EpochReport {
  epoch: number;
  /** Mean training loss over the epoch's steps (before each update). */
  loss: number;
  /** Top-1 category accuracy on the training boxes during the epoch (null without categories). */
  accuracy: number | null;
  heldOutLoss?: number;
  heldOutAccuracy?: number | null;
  /** Attribute mAP on the held-out boxes (null when no attribute has a held-out positive). */
  heldOutMAP?: number | null;
  steps: number;
  /** Wall time of the epoch's training steps. */
  seconds: number;
}

export interface TrainPromptsOptions extends Pick<PromptLearnerOptions, 'nCtx' | 'init' | 'classSpecific' | 'position' | 'tokenizer'> {
  records: readonly PromptRecord[];
  /** Category vocabulary (default: the data's categories in order of appearance). */
  categories?: readonly string[];
  /** Attribute vocabulary (default: the data's attribute names in order of appearance). */
  attributes?: readonly string[];
  epochs?: number;
  batchSize?: number;
  lr?: number;
  /** Fraction of the records (images) held out for validation and early stopping (default 0.2; 0: none). */
  holdout?: number;
  /** Epochs without a better held-out (else training) loss before stopping (default 3). */
  patience?: number;
  /** Seed of the split, the shuffles and the context initialisation (default 1). */
  seed?: number;
  attributeWeight?: number;
  positiveWeight?: number;
  resize?: RegionResize;
  onEpoch?: (report: EpochReport) => void;
  onStep?: (step: number, steps: number, result: PromptStepResult) => void;
  /** Stops between steps (the promise rejects; nothing is saved). */
  signal?: AbortSignal;
}

export interface TrainPromptsResult {
  /** The best epoch's prompts (lowest held-out loss, else training loss). */
  prompts: LearnedPrompts;
  history: EpochReport[];
  bestEpoch: number;
  stoppedEarly: boolean;
  /** Held-out scores of the hand-written templates on the same regions, for comparison. */
  templates?: { heldOutAccuracy: number | null; heldOutMAP: number | null };
  counts: { train: number; heldOut: number };
}

/** Reads a training JSONL: { image, boxes: [{ box, category?, attributes? }] } per line; images relative to the file. */
export function readPromptRecords(path: string, options: { checkImages?: boolean } = {}): PromptRecord[] {
  let text: string;
  try {
    text = localFiles('readPromptRecords').readText(path);
  } catch (err) {
    throw new InputError('readPromptRecords', `cannot read ${path}: ${(err as Error).message}`);
  }
  const records: PromptRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const source = `${path}:${i + 1}`;
    let json: { image?: unknown; boxes?: unknown };
    try {
      json = JSON.parse(line);
    } catch (err) {
      throw new InputError('readPromptRecords', `${source}: not JSON (${(err as Error).message})`);
    }
    if (typeof json?.image !== 'string') throw new InputError('readPromptRecords', `${source}: "image" must be a path, got ${JSON.stringify(json?.image)}`);
    records.push({ image: localFiles('readPromptRecords').besides(path, json.image), boxes: json.boxes as PromptBox[], source });
  });
  if (records.length === 0) throw new InputError('readPromptRecords', `${path} holds no records`);
  checkRecords(records, {}, options);
  return records;
}

/** Checks records before any work, naming the record (its source line) and the box. */
export function checkRecords(records: readonly PromptRecord[], vocab: { categories?: readonly string[]; attributes?: readonly string[] } = {}, options: { checkImages?: boolean } = {}): void {
  const op = 'trainPrompts';
  if (!Array.isArray(records) || records.length === 0) throw new InputError(op, 'records must be a non-empty list');
  records.forEach((r, i) => {
    const where = r?.source ?? `records[${i}]`;
    if (options.checkImages !== false && typeof r?.image === 'string' && !localFiles(op).isFile(r.image)) throw new InputError(op, `${where}: image ${r.image} does not exist`);
    if (!Array.isArray(r?.boxes) || r.boxes.length === 0) throw new InputError(op, `${where}: the record has no boxes`);
    (r.boxes as PromptBox[]).forEach((b: PromptBox, j: number) => {
      const at = `${where}: box ${j}`;
      if (!Array.isArray(b?.box) || b.box.length !== 4 || !(b.box as readonly unknown[]).every((v) => typeof v === 'number' && Number.isFinite(v))) throw new InputError(op, `${at}: "box" must be 4 numbers [x1, y1, x2, y2], got ${JSON.stringify(b?.box)}`);
      if (b.category !== undefined && typeof b.category !== 'string') throw new InputError(op, `${at}: "category" must be a string, got ${JSON.stringify(b.category)}`);
      if (b.category !== undefined && vocab.categories && !vocab.categories.includes(b.category)) throw new InputError(op, `${at}: category ${JSON.stringify(b.category)} is not in the category vocabulary`);
      if (b.attributes !== undefined && (typeof b.attributes !== 'object' || b.attributes === null || Array.isArray(b.attributes))) throw new InputError(op, `${at}: "attributes" must be an object { name: 1 | 0 | -1 }`);
      for (const [name, v] of Object.entries(b.attributes ?? {})) {
        if (v !== 1 && v !== 0 && v !== -1) throw new InputError(op, `${at}: attribute ${JSON.stringify(name)} is ${JSON.stringify(v)}: expected 1, 0 or -1 (unknown)`);
        if (vocab.attributes && !vocab.attributes.includes(name)) throw new InputError(op, `${at}: attribute ${JSON.stringify(name)} is not in the attribute vocabulary`);
      }
    });
  });
}

/** Names in order of first appearance. */
function appearing(records: readonly PromptRecord[], of: (b: PromptBox) => readonly string[]): string[] {
  return [...new Set(records.flatMap((r) => r.boxes.flatMap(of)))];
}

/** Fisher–Yates with the seeded stream. */
function shuffle<T>(xs: T[], r: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(((r() + 1) / 2) * (i + 1)) % (i + 1);
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

/** Labelled region embeddings of a set of boxes. */
interface Samples {
  regions: Float32Array;
  categories: Int32Array;
  attributes: Int8Array;
  count: number;
}

function positiveInteger(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new InputError('trainPrompts', `${name} must be a positive integer, got ${v}`);
  return v;
}

/** Learns category and attribute prompts for `classifier`'s CLIP from labelled boxes. */
export async function trainPrompts(classifier: RegionClassifier, options: TrainPromptsOptions): Promise<TrainPromptsResult> {
  const op = 'trainPrompts';
  const { records } = options;
  checkRecords(records, options);
  const categories = [...(options.categories ?? appearing(records, (b) => (b.category === undefined ? [] : [b.category])))];
  const attributes = [...(options.attributes ?? appearing(records, (b) => Object.keys(b.attributes ?? {})))];
  if (categories.length === 0 && attributes.length === 0) throw new InputError(op, 'empty vocabularies: the data names no category and no attribute (and none were given)');
  const epochs = positiveInteger('epochs', options.epochs ?? 10);
  const batchSize = positiveInteger('batchSize', options.batchSize ?? 32);
  const patience = positiveInteger('patience', options.patience ?? 3);
  const holdout = options.holdout ?? 0.2;
  if (!(holdout >= 0 && holdout < 1)) throw new InputError(op, `holdout must be a fraction in [0, 1), got ${holdout}`);
  const lr = options.lr ?? 2e-3;
  if (!(lr > 0 && Number.isFinite(lr))) throw new InputError(op, `lr must be a positive number, got ${lr}`);
  const seed = options.seed ?? 1;
  const random = uniform(seed);
  const clip = classifier.clip;
  const e = clip.config.embedDim;

  // The split is by image, so that no held-out box shares an image with a training box.
  const order = shuffle([...records.keys()], random);
  const nHeld = holdout > 0 && records.length > 1 ? Math.min(records.length - 1, Math.max(1, Math.round(holdout * records.length))) : 0;
  const heldIndex = new Set(order.slice(0, nHeld));

  // Region embeddings once per record (one vision run per image), with their labels.
  const collect = async (which: number[]): Promise<Samples> => {
    const parts: Float32Array[] = [];
    const cats: number[] = [];
    const attrs: number[] = [];
    for (const i of which) {
      const r = records[i]!;
      let regions: Float32Array;
      try {
        regions = await classifier.embedRegions(r.image, r.boxes.map((b) => b.box), { resize: options.resize });
      } catch (err) {
        throw new InputError(op, `${r.source ?? `records[${i}]`}: ${(err as Error).message}`, { cause: err });
      }
      parts.push(regions);
      for (const b of r.boxes) {
        cats.push(b.category === undefined ? -1 : categories.indexOf(b.category));
        for (const a of attributes) attrs.push(b.attributes?.[a] ?? -1);
      }
    }
    const regions = new Float32Array(cats.length * e);
    let at = 0;
    for (const p of parts) (regions.set(p, at), (at += p.length));
    return { regions, categories: Int32Array.from(cats), attributes: Int8Array.from(attrs), count: cats.length };
  };
  const train = await collect([...records.keys()].filter((i) => !heldIndex.has(i)));
  const held = await collect([...records.keys()].filter((i) => heldIndex.has(i)));

  const learnerOptions = { nCtx: options.nCtx, init: options.init, classSpecific: options.classSpecific, position: options.position, tokenizer: options.tokenizer ?? classifier.tokenizer, seed };
  const learners: { categories?: PromptLearner; attributes?: PromptLearner } = {};
  let objective: PromptObjective | undefined;
  try {
    if (categories.length) learners.categories = await PromptLearner.create(clip, categories, learnerOptions);
    if (attributes.length) learners.attributes = await PromptLearner.create(clip, attributes, { ...learnerOptions, seed: seed + 1 });
    objective = new PromptObjective({ ...learners, optimizer: (params) => new Adam(clip.gpu, params, { lr }), attributeWeight: options.attributeWeight, positiveWeight: options.positiveWeight });
    const b = Math.min(batchSize, train.count);
    const na = attributes.length;
    const nc = categories.length;
    // A batch of samples padded to b rows (zero regions, no labels), so one plan serves every batch.
    const batch = (s: Samples, idx: readonly number[]) => {
      const regions = new Float32Array(b * e);
      const cats = new Int32Array(b).fill(-1);
      const attrs = new Int8Array(b * na).fill(-1);
      idx.forEach((k, r) => {
        regions.set(s.regions.subarray(k * e, (k + 1) * e), r * e);
        cats[r] = s.categories[k]!;
        attrs.set(s.attributes.subarray(k * na, (k + 1) * na), r * na);
      });
      return { regions, labels: { ...(nc && { categories: cats }), ...(na && { attributes: attrs }) } };
    };
    const hasLabels = (s: Samples, idx: readonly number[]) => idx.some((k) => s.categories[k]! >= 0 || s.attributes.subarray(k * na, (k + 1) * na).some((v) => v >= 0));
    const chunks = (idx: number[]) => Array.from({ length: Math.ceil(idx.length / b) }, (_, i) => idx.slice(i * b, (i + 1) * b));

    // The held-out loss and scores, in the same padded batches.
    const evaluate = async (s: Samples) => {
      let loss = 0;
      let weight = 0;
      const catScores = new Float32Array(s.count * nc);
      const attrScores = new Float32Array(s.count * na);
      for (const idx of chunks([...Array(s.count).keys()])) {
        const { regions, labels } = batch(s, idx);
        const r = await objective!.evaluate(regions, labels);
        loss += r.loss * idx.length;
        weight += idx.length;
        idx.forEach((k, row) => {
          if (r.categoryLogits) catScores.set(r.categoryLogits.subarray(row * nc, (row + 1) * nc), k * nc);
          if (r.attributeLogits) attrScores.set(r.attributeLogits.subarray(row * na, (row + 1) * na), k * na);
        });
      }
      return { loss: loss / weight, ...scores(s, catScores, attrScores) };
    };
    const scores = (s: Samples, catScores: Float32Array, attrScores: Float32Array) => ({
      accuracy: nc ? categoryAccuracy(catScores, s.categories, nc, [1]).top[1]! : null,
      mAP: na ? evaluateAttributes({ scores: attrScores, labels: s.attributes, attributes }).mAP : null,
    });

    const snapshot = async (): Promise<LearnedPrompts> => ({
      clip: clipIdentity(clip),
      ...(learners.categories && { categories: await promptSetOf(learners.categories) }),
      ...(learners.attributes && { attributes: await promptSetOf(learners.attributes) }),
    });

    let templates: TrainPromptsResult['templates'];
    if (held.count) {
      const words = async (names: string[], t: readonly string[]) => (names.length ? clipLogits(held.regions, await classifier.promptEmbeddings(names, t), e, 1) : new Float32Array(0));
      const s = scores(held, await words(categories, DEFAULT_TEMPLATES), await words(attributes, DEFAULT_ATTRIBUTE_TEMPLATES));
      templates = { heldOutAccuracy: s.accuracy, heldOutMAP: s.mAP };
    }

    const history: EpochReport[] = [];
    let best = { loss: Infinity, epoch: 0, prompts: undefined as LearnedPrompts | undefined };
    let stoppedEarly = false;
    for (let epoch = 1; epoch <= epochs; epoch++) {
      const steps = chunks(shuffle([...Array(train.count).keys()], random)).filter((idx) => hasLabels(train, idx));
      const start = performance.now();
      let loss = 0;
      let seen = 0;
      let correct = 0;
      let labelled = 0;
      for (const [i, idx] of steps.entries()) {
        if (options.signal?.aborted) throw new InputError(op, 'training was interrupted');
        const { regions, labels } = batch(train, idx);
        const r = await objective.step(regions, labels);
        loss += r.loss * idx.length;
        seen += idx.length;
        if (r.categoryLogits) {
          const acc = categoryAccuracy(r.categoryLogits.subarray(0, idx.length * nc), labels.categories!.subarray(0, idx.length), nc, [1]);
          correct += (acc.top[1] ?? 0) * acc.count;
          labelled += acc.count;
        }
        options.onStep?.(i + 1, steps.length, r);
      }
      const report: EpochReport = { epoch, loss: loss / seen, accuracy: nc && labelled ? correct / labelled : null, steps: steps.length, seconds: (performance.now() - start) / 1000 };
      if (held.count) {
        const h = await evaluate(held);
        Object.assign(report, { heldOutLoss: h.loss, heldOutAccuracy: h.accuracy, heldOutMAP: h.mAP });
      }
      history.push(report);
      options.onEpoch?.(report);
      // The loss the report gives is before each step: re-evaluate the training set only without a held-out split.
      const monitored = held.count ? report.heldOutLoss! : (await evaluate(train)).loss;
      if (monitored < best.loss - 1e-7) {
        best = { loss: monitored, epoch, prompts: await snapshot() };
      } else if (epoch - best.epoch >= patience) {
        stoppedEarly = epoch < epochs;
        break;
      }
    }
    // Every monitored loss was NaN: keep what the last epoch reached.
    best.prompts ??= await snapshot();
    return { prompts: best.prompts, history, bestEpoch: best.epoch, stoppedEarly, templates, counts: { train: train.count, heldOut: held.count } };
  } finally {
    objective?.dispose();
    for (const l of Object.values(learners)) l.dispose();
  }
}

// Learned prompts on disk: each vocabulary's context vectors and the text features they gave (F32
// safetensors), with metadata naming the classes, the layout and the CLIP they were trained on.
// Loading onto a CLIP re-encodes the prompts and compares with the saved features: a different
// checkpoint (or tokenizer) is refused instead of silently giving other classes.
import { SafetensorsError, SafetensorsFile } from '../../io/safetensors.js';
import type { ByteSource } from '../../io/source.js';
import { writeSafetensorsFile } from '../../io/safetensorsWrite.js';
import type { ClipModel } from '../clip/model.js';
import { InputError, type QueryTokenizer } from '../inputs.js';
import { CLASS_TOKEN_POSITIONS, PromptLearner, type ClassTokenPosition } from './learner.js';

export const PROMPTS_FORMAT = 'ovgpu-prompts/1';

/** One vocabulary's learned prompts. */
export interface PromptSet {
  names: string[];
  nCtx: number;
  classSpecific: boolean;
  position: ClassTokenPosition;
  init?: string;
  /** [nCtx, width] or [classes, nCtx, width]. */
  ctx: Float32Array;
  /** [classes, embed]: the prompts' text features with this context (unnormalised). */
  features: Float32Array;
}

/** What identifies the CLIP the prompts were trained on (its text side and joint space). */
export interface ClipIdentity {
  embedDim: number;
  width: number;
  layers: number;
  heads: number;
  contextLength: number;
  vocabSize: number;
  logitScale: number;
}

export interface LearnedPrompts {
  clip: ClipIdentity;
  categories?: PromptSet;
  attributes?: PromptSet;
}

const PROMPT_KINDS = ['categories', 'attributes'] as const;

export function clipIdentity(clip: ClipModel): ClipIdentity {
  const t = clip.config.text;
  if (!t) throw new InputError('prompts', 'the CLIP checkpoint has no text tower');
  return { embedDim: clip.config.embedDim, width: t.width, layers: t.layers, heads: t.heads, contextLength: t.contextLength, vocabSize: t.vocabSize, logitScale: clip.logitScale };
}

/** A learner's current state as a PromptSet (reads the context and runs the prompts once). */
export async function promptSetOf(learner: PromptLearner): Promise<PromptSet> {
  return {
    names: [...learner.names],
    nCtx: learner.nCtx,
    classSpecific: learner.classSpecific,
    position: learner.position,
    ...(learner.init !== undefined && { init: learner.init }),
    ctx: (await learner.ctx.read()) as Float32Array,
    features: await learner.encode(),
  };
}

/** Writes learned prompts (atomically: an interrupted write leaves the previous file). */
export function savePrompts(path: string, prompts: LearnedPrompts): void {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  const metadata: Record<string, string> = { format: PROMPTS_FORMAT, clip: JSON.stringify(prompts.clip) };
  for (const kind of PROMPT_KINDS) {
    const set = prompts[kind];
    if (!set) continue;
    const n = set.names.length;
    const width = set.ctx.length / ((set.classSpecific ? n : 1) * set.nCtx);
    tensors[`${kind}.ctx`] = { shape: set.classSpecific ? [n, set.nCtx, width] : [set.nCtx, width], data: set.ctx };
    tensors[`${kind}.features`] = { shape: [n, set.features.length / n], data: set.features };
    metadata[kind] = JSON.stringify({ names: set.names, n_ctx: set.nCtx, class_specific: set.classSpecific, position: set.position, ...(set.init !== undefined && { init: set.init }) });
  }
  writeSafetensorsFile(path, tensors, metadata);
}

/** Reads a prompt file written by savePrompts (a path, a URL or a ByteSource); a file of another kind is a SafetensorsError naming it. */
export async function readPrompts(source: string | URL | ByteSource): Promise<LearnedPrompts> {
  const file = await SafetensorsFile.open(source);
  const path = file.path;
  try {
    const fail = (message: string): never => {
      throw new SafetensorsError(path, message);
    };
    if (file.metadata.format !== PROMPTS_FORMAT) fail(`not an ovgpu prompt file (metadata format ${JSON.stringify(file.metadata.format)}, expected ${PROMPTS_FORMAT})`);
    const json = (key: string) => {
      try {
        return JSON.parse(file.metadata[key]!) as Record<string, unknown>;
      } catch {
        return fail(`metadata ${key} is not JSON`);
      }
    };
    const out: LearnedPrompts = { clip: json('clip') as unknown as ClipIdentity };
    for (const kind of PROMPT_KINDS) {
      if (file.metadata[kind] === undefined) continue;
      const m = json(kind);
      const names = m.names as string[];
      const position = m.position as ClassTokenPosition;
      if (!Array.isArray(names) || !names.every((n) => typeof n === 'string') || !Number.isInteger(m.n_ctx) || !CLASS_TOKEN_POSITIONS.includes(position)) fail(`metadata ${kind} must hold names, n_ctx and position, got ${file.metadata[kind]}`);
      const ctx = await file.get(`${kind}.ctx`);
      const features = await file.get(`${kind}.features`);
      if (ctx.dtype !== 'F32' || features.dtype !== 'F32' || features.shape[0] !== names.length) fail(`${kind}.ctx and ${kind}.features must be F32, features [${names.length}, embed]`);
      out[kind] = { names, nCtx: m.n_ctx as number, classSpecific: !!m.class_specific, position, ...(typeof m.init === 'string' && { init: m.init }), ctx: ctx.data as Float32Array, features: features.data as Float32Array };
    }
    if (!out.categories && !out.attributes) fail('holds neither category nor attribute prompts');
    return out;
  } finally {
    file.close();
  }
}

/**
 * A prompt file's text features re-encoded on `clip` ([classes, embed] per vocabulary), checked to
 * come from the CLIP the prompts were trained on: the text configuration must match and the
 * re-encoded features must equal the saved ones.
 */
export async function encodePrompts(clip: ClipModel, prompts: LearnedPrompts, options: { tokenizer?: QueryTokenizer; source?: string } = {}): Promise<{ categories?: Float32Array; attributes?: Float32Array }> {
  const op = 'prompts';
  const where = options.source ? `${options.source}: ` : '';
  const want = clipIdentity(clip);
  const got = prompts?.clip ?? ({} as ClipIdentity);
  const differs = (Object.keys(want) as (keyof ClipIdentity)[]).filter((k) => (k === 'logitScale' ? !(Math.abs(want[k] - got[k]) <= 1e-4) : want[k] !== got[k]));
  if (differs.length) throw new InputError(op, `${where}the prompts were trained on another CLIP: ${differs.map((k) => `${k} ${got[k]} (this model: ${want[k]})`).join(', ')}`);
  const out: { categories?: Float32Array; attributes?: Float32Array } = {};
  for (const kind of PROMPT_KINDS) {
    const set = prompts[kind];
    if (!set) continue;
    const learner = await PromptLearner.create(clip, set.names, { nCtx: set.nCtx, classSpecific: set.classSpecific, position: set.position, ctx: set.ctx, tokenizer: options.tokenizer });
    let features: Float32Array;
    try {
      features = await learner.encode();
    } finally {
      learner.dispose();
    }
    let err = 0;
    let scale = 0;
    features.forEach((v, i) => {
      err = Math.max(err, Math.abs(v - set.features[i]!));
      scale = Math.max(scale, Math.abs(set.features[i]!));
    });
    // f16 weights re-encode within ~1e-3 of scale; another checkpoint or tokenizer differs by O(1).
    if (!(err <= 2e-2 * scale)) throw new InputError(op, `${where}the ${kind} prompts were trained on another CLIP checkpoint or tokenizer: re-encoded here they differ from the saved features by ${err.toExponential(2)} (scale ${scale.toExponential(2)})`);
    out[kind] = features;
  }
  return out;
}

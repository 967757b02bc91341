import type { Gpu } from '../../gpu/gpu.js';
import { GpuError } from '../../gpu/errors.js';
import { SafetensorsError, f16OverflowIndex } from '../../io/safetensors.js';
import { InputError } from '../inputs.js';
import { Tensor, paddedByteLength } from '../../tensor.js';
import type { DType } from '../../dtype.js';
import type { ConfigKey, ConfigOrigin, TextConfig, TowerConfig, VisionConfig } from './config.js';
import { sourceNames, sourceOf, type Convention } from './names.js';

/** Read access to a checkpoint's tensors (one file or shards), one tensor at a time. */
export interface WeightReader {
  /** For messages: the file or folder. */
  readonly path: string;
  names(): string[];
  shape(name: string): readonly number[] | undefined;
  /** The stored dtype (F32, F16, …); undefined when there is no such tensor. */
  dtype(name: string): string | undefined;
  /** A float tensor's values as f32 (F16/BF16 widened); refuses other dtypes and, unless allowed, NaN or Inf. */
  read(name: string): Promise<Float32Array>;
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

function layerShapes(c: TowerConfig, i: number): [string, number[]][] {
  const d = c.width;
  const f = c.mlpWidth;
  return [
    ['ln1.weight', [d]], ['ln1.bias', [d]],
    ['qkv.weight', [3 * d, d]], ['qkv.bias', [3 * d]],
    ['out.weight', [d, d]], ['out.bias', [d]],
    ['ln2.weight', [d]], ['ln2.bias', [d]],
    ['fc1.weight', [f, d]], ['fc1.bias', [f]],
    ['fc2.weight', [d, f]], ['fc2.bias', [d]],
  ].map(([n, s]) => [`layers.${i}.${n as string}`, s as number[]]);
}

/** Canonical parameters of a tower and their expected shapes. */
export function towerShapes(tower: 'vision' | 'text', c: VisionConfig | TextConfig, embedDim: number, layout: 'NK' | 'KN'): Map<string, number[]> {
  const d = c.width;
  const entries: [string, number[]][] = [];
  if (tower === 'vision') {
    const v = c as VisionConfig;
    const grid = v.imageSize / v.patchSize;
    entries.push(['patch.weight', [d, 3, v.patchSize, v.patchSize]], ['class', [d]], ['pos', [1 + grid * grid, d]], ['ln_pre.weight', [d]], ['ln_pre.bias', [d]], ['ln_post.weight', [d]], ['ln_post.bias', [d]]);
  } else {
    const t = c as TextConfig;
    entries.push(['tok', [t.vocabSize, d]], ['pos', [t.contextLength, d]], ['ln_final.weight', [d]], ['ln_final.bias', [d]]);
  }
  for (let i = 0; i < c.layers; i++) entries.push(...layerShapes(c, i));
  entries.push(['proj', layout === 'NK' ? [embedDim, d] : [d, embedDim]]);
  return new Map(entries);
}

/** A checkpoint tensor (or the parts stacked into one) checked against the config, ready to read. */
export interface PlannedParam {
  /** Canonical name. */
  readonly param: string;
  readonly shape: readonly number[];
  /** Checkpoint names: one, or the parts stacked along the first axis. */
  readonly names: readonly string[];
}

/** What a load checks against: the checkpoint, its names, the config's origin, and the device. */
export interface LoadContext {
  readonly op: string;
  readonly reader: WeightReader;
  readonly conv: Convention;
  readonly origin: ConfigOrigin;
  /** Target storage: what the size limit is counted in. */
  readonly dtype: DType;
  /** Largest buffer the device binds, in bytes. */
  readonly maxBytes: number;
}

const FLOAT_DTYPES = ['F32', 'F16', 'BF16'];

/**
 * Checks one checkpoint tensor's presence, dtype and shape, naming it (and `what` it is for).
 * Only the header is consulted: nothing is read or allocated.
 */
export function checkTensor(reader: WeightReader, name: string, expected: readonly number[], what: string): void {
  const shape = reader.shape(name);
  if (!shape) throw new SafetensorsError(reader.path, `missing tensor ${JSON.stringify(name)} (${what}), expected shape ${fmt(expected)}`);
  const dtype = reader.dtype(name);
  if (!FLOAT_DTYPES.includes(dtype!)) throw new SafetensorsError(reader.path, `tensor ${JSON.stringify(name)} (${what}) has dtype ${dtype}, expected a float dtype (${FLOAT_DTYPES.join(', ')})`);
  if (shape.join() !== expected.join()) throw new SafetensorsError(reader.path, `tensor ${JSON.stringify(name)} (${what}) has shape ${fmt(shape)}, expected ${fmt(expected)}`);
}

/** Refuses a parameter bigger than one device buffer before anything is read, naming the tensor. */
export function checkSize(ctx: LoadContext, name: string, shape: readonly number[], what: string): void {
  const bytes = paddedByteLength(shape, ctx.dtype);
  if (bytes > ctx.maxBytes) {
    throw new SafetensorsError(ctx.reader.path, `tensor ${JSON.stringify(name)} (${what}) of shape ${fmt(shape)} needs ${bytes} bytes as ${ctx.dtype}, above this device's limit of ${ctx.maxBytes} bytes per buffer`);
  }
}

/** The checkpoint name a non-stacked source resolves to: the first spelling present. */
function resolve(reader: WeightReader, prefix: string, names: readonly string[]): string {
  return names.map((n) => prefix + n).find((n) => reader.shape(n) !== undefined) ?? prefix + names[0]!;
}

/**
 * Layers present under a tower's layer prefix: the highest index plus one (0: none), and a tensor of
 * that layer; `gap` is the first lower index without any tensor (so the count is bounded by the
 * number of tensors, whatever index a name claims).
 */
function layersPresent(reader: WeightReader, layerPrefix: string): { count: number; example?: string; gap?: number } {
  const [head, tail] = layerPrefix.split('{i}') as [string, string];
  const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`^${esc(head)}(\\d+)${esc(tail)}`);
  const seen = new Set<number>();
  let count = 0;
  let example: string | undefined;
  for (const n of reader.names()) {
    const m = re.exec(n);
    if (!m) continue;
    seen.add(Number(m[1]));
    if (Number(m[1]) + 1 > count) [count, example] = [Number(m[1]) + 1, n];
  }
  const gap = seen.size === count ? undefined : [...Array(seen.size + 1).keys()].find((i) => !seen.has(i));
  return { count, example, gap };
}

/**
 * Checks a tower's config against the checkpoint header (a disagreement is an InputError: a bad
 * config.json is bad input, like a bad checkpoint), then every tensor's presence, dtype, shape
 * and size, before anything is read or allocated. The sizes the config gives (layers, width, MLP
 * width, patch and image size, context, vocabulary, projection) are compared first with the tensor
 * that fixes each, so a wrong config is named as such (with the field and the tensor), and a huge
 * layer count never builds a huge list. Returns what to read, in order.
 */
export function planTower(ctx: LoadContext, tower: 'vision' | 'text', config: VisionConfig | TextConfig, embedDim: number, skip: readonly string[] = []): PlannedParam[] {
  const { reader, conv, origin } = ctx;
  const layers = layersPresent(reader, conv[tower].layer);
  // The first tensor of layer i, to name one that is missing.
  const layerTensor = (i: number) => conv[tower].layer.replace('{i}', String(i)) + sourceNames(conv.layer['ln1.weight']!).names[0]!;
  if (config.layers !== layers.count) {
    const evidence = config.layers > layers.count
      ? `no tensor ${JSON.stringify(layerTensor(layers.count))}`
      : `tensor ${JSON.stringify(layers.example)} is of layer ${layers.count - 1}`;
    throw new InputError(ctx.op, `${origin.source}: ${origin.field(tower, 'layers')} is ${config.layers}, but ${reader.path} has ${layers.count} ${tower} layers (${evidence})`);
  }
  if (layers.gap !== undefined) {
    throw new SafetensorsError(reader.path, `missing tensor ${JSON.stringify(layerTensor(layers.gap))}: no tensor of ${tower} layer ${layers.gap}, though ${JSON.stringify(layers.example)} is of layer ${layers.count - 1}`);
  }
  const facts: [ConfigKey, string, number, number, string?][] = [];
  if (tower === 'vision') {
    const v = config as VisionConfig;
    const grid = v.imageSize / v.patchSize;
    facts.push(['width', 'patch.weight', 0, v.width], ['patchSize', 'patch.weight', 2, v.patchSize], ['imageSize', 'pos', 0, 1 + grid * grid, `1 + (${v.imageSize} / ${v.patchSize})² positions`]);
  } else {
    const t = config as TextConfig;
    facts.push(['vocabSize', 'tok', 0, t.vocabSize], ['width', 'tok', 1, t.width], ['contextLength', 'pos', 0, t.contextLength]);
  }
  facts.push(['mlpWidth', 'layers.0.fc1.weight', 0, config.mlpWidth]);
  if (!skip.includes('proj')) facts.push(['embedDim', 'proj', conv.projectionLayout === 'NK' ? 0 : 1, embedDim]);
  for (const [key, param, axis, want, why] of facts) {
    const { source, prefix } = sourceOf(conv, tower, param);
    const name = resolve(reader, prefix, sourceNames(source).names);
    const shape = reader.shape(name);
    // A missing or low-rank tensor is reported by the full check below.
    if (!shape || shape.length <= axis || shape[axis] === want) continue;
    const value = key === 'embedDim' ? embedDim : (config as unknown as Record<string, number>)[key];
    throw new InputError(ctx.op, `${origin.source}: ${origin.field(tower, key)} is ${value}, but tensor ${JSON.stringify(name)} in ${reader.path} has shape ${fmt(shape)} (expected ${why ?? want}${why ? ` = ${want}` : ''} at axis ${axis})`);
  }
  const out: PlannedParam[] = [];
  for (const [param, shape] of towerShapes(tower, config, embedDim, conv.projectionLayout)) {
    if (skip.includes(param)) continue;
    const { source, prefix } = sourceOf(conv, tower, param);
    const what = `${tower} ${param}`;
    const { concat, names } = sourceNames(source);
    const resolved = concat ? names.map((n) => prefix + n) : [resolve(reader, prefix, names)];
    const partShape = concat ? [shape[0]! / names.length, ...shape.slice(1)] : shape;
    if (!concat && names.length > 1 && !reader.shape(resolved[0]!)) {
      throw new SafetensorsError(reader.path, `missing tensor ${names.map((n) => JSON.stringify(prefix + n)).join(' or ')} (${what}), expected shape ${fmt(shape)}`);
    }
    for (const name of resolved) checkTensor(reader, name, partShape, what);
    checkSize(ctx, resolved.length > 1 ? `${resolved[0]} + ${resolved.length - 1} more` : resolved[0]!, shape, what);
    out.push({ param, shape, names: resolved });
  }
  return out;
}

/**
 * Reads and uploads planned parameters one at a time under their canonical names, recording the
 * checkpoint names used. On any error the tensors uploaded so far are freed before it is rethrown.
 */
export async function uploadPlanned(gpu: Gpu, reader: WeightReader, plan: readonly PlannedParam[], dtype: DType, used: Set<string>): Promise<Map<string, Tensor>> {
  const out = new Map<string, Tensor>();
  try {
    for (const { param, shape, names } of plan) {
      let data: Float32Array;
      if (names.length === 1) data = await reader.read(names[0]!);
      else {
        data = new Float32Array(shape.reduce((a, b) => a * b, 1));
        for (const [k, name] of names.entries()) {
          const part = await reader.read(name);
          data.set(part, k * part.length);
        }
      }
      if (dtype === 'f16') {
        const i = f16OverflowIndex(data);
        const name = names[Math.floor((i * names.length) / data.length)];
        if (i >= 0) throw new SafetensorsError(reader.path, `tensor ${JSON.stringify(name)}: value ${data[i]} overflows f16 storage (index ${i % (data.length / names.length)}); load with dtype f32`);
      }
      for (const name of names) used.add(name);
      out.set(param, Tensor.from(gpu, data, shape, dtype));
    }
    return out;
  } catch (err) {
    for (const t of out.values()) t.dispose();
    throw err;
  }
}

/**
 * The stored (log) logit scale: one finite float. Undefined when the checkpoint has none, which is
 * an error where `required` (a two-tower checkpoint: similarities would silently use a default).
 */
export async function readLogitScale(reader: WeightReader, conv: Convention, used: Set<string>, required: boolean): Promise<number | undefined> {
  const shape = reader.shape(conv.logitScale);
  if (!shape && !required) return undefined;
  checkTensor(reader, conv.logitScale, shape?.length ? [1] : [], 'logit scale');
  used.add(conv.logitScale);
  return (await reader.read(conv.logitScale))[0];
}

/** Any loader failure as a GpuError naming `op` (GpuErrors, SafetensorsErrors included, pass as they are). */
export function loadError(op: string, err: unknown): GpuError {
  return err instanceof GpuError ? err : new GpuError(op, err instanceof Error ? err.message : String(err), { cause: err });
}

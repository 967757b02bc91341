import type { Gpu } from '../../gpu/gpu.js';
import { Tensor } from '../../tensor.js';
import type { DType } from '../../dtype.js';
import type { TextConfig, TowerConfig, VisionConfig } from './config.js';
import { sourceNames, sourceOf, type Convention } from './names.js';

/** Read access to a checkpoint's tensors (one file or shards), one tensor at a time. */
export interface WeightReader {
  /** For messages: the file or folder. */
  readonly path: string;
  names(): string[];
  shape(name: string): readonly number[] | undefined;
  /** The tensor's values as f32 (F16/BF16 widened). */
  read(name: string): Float32Array;
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

/** Reads one canonical parameter from the checkpoint, checking its shape, recording what it used. */
function readParam(reader: WeightReader, conv: Convention, tower: 'vision' | 'text', param: string, expected: number[], used: Set<string>): Float32Array {
  const { source, prefix } = sourceOf(conv, tower, param);
  const what = `${tower} ${param}`;
  const { concat, names } = sourceNames(source);
  if (concat) {
    const partShape = [expected[0]! / names.length, ...expected.slice(1)];
    const out = new Float32Array(expected.reduce((a, b) => a * b, 1));
    names.forEach((name, k) => {
      const data = readOne(reader, prefix + name, partShape, what, used);
      out.set(data, k * data.length);
    });
    return out;
  }
  const found = names.map((n) => prefix + n).find((n) => reader.shape(n) !== undefined) ?? prefix + names[0]!;
  return readOne(reader, found, expected, what, used);
}

function readOne(reader: WeightReader, name: string, expected: number[], what: string, used: Set<string>): Float32Array {
  const shape = reader.shape(name);
  if (!shape) throw new Error(`${reader.path}: missing tensor ${JSON.stringify(name)} (${what}), expected shape ${fmt(expected)}`);
  if (shape.join() !== expected.join()) {
    throw new Error(`${reader.path}: tensor ${JSON.stringify(name)} (${what}) has shape ${fmt(shape)}, expected ${fmt(expected)}`);
  }
  used.add(name);
  return reader.read(name);
}

/**
 * Uploads a tower's weights (read and uploaded one at a time) under canonical names, except the
 * canonical names in `skip` (e.g. 'proj' for heads that never project). On any error the tensors
 * uploaded so far are freed before it is rethrown.
 */
export function loadTower(gpu: Gpu, reader: WeightReader, conv: Convention, tower: 'vision' | 'text', config: VisionConfig | TextConfig, embedDim: number, dtype: DType, used: Set<string>, skip: readonly string[] = []): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  try {
    for (const [param, shape] of towerShapes(tower, config, embedDim, conv.projectionLayout)) {
      if (skip.includes(param)) continue;
      out.set(param, Tensor.from(gpu, readParam(reader, conv, tower, param, shape, used), shape, dtype));
    }
    return out;
  } catch (err) {
    for (const t of out.values()) t.dispose();
    throw err;
  }
}

/** The stored (log) logit scale, a 0-d tensor. */
export function readLogitScale(reader: WeightReader, conv: Convention, used: Set<string>): number | undefined {
  const shape = reader.shape(conv.logitScale);
  if (!shape) return undefined;
  used.add(conv.logitScale);
  return reader.read(conv.logitScale)[0];
}

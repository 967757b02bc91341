// The loader fuzz's worker process (bundled and forked by safetensors-fuzz.test.ts, which times every
// case and kills this process if one hangs). For case i of a seed it builds a mutated checkpoint
// (header, offsets, dtypes, shapes, truncations, config.json, NaN) from a fixture, loads it with
// the model's own loader and reports what happened; the test judges the reports.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipModel, GpuError, OwlVitDetector, openGpu, type Gpu, type Tensor } from '../../../src/index.js';
import { rng } from '../../util/random.js';
import { rawSafetensors, readRawSafetensors, type RawTensor } from '../../util/safetensors.js';
import { MODELS, type Expect, type FuzzInit, type FuzzReport, type Model } from './protocol.js';

interface Entry {
  name: string;
  dtype: unknown;
  shape: unknown;
  offsets: unknown;
  extra?: Record<string, unknown>;
}

interface Checkpoint {
  entries: Entry[];
  data: Uint8Array;
  metadata?: Record<string, string>;
  /** Spaces appended to the header (writers pad it to 8 bytes). */
  pad: number;
}

const DTYPES: unknown[] = ['F16', 'BF16', 'F64', 'I32', 'I64', 'U8', 'I8', 'BOOL', 'U16', 'F8_E4M3', 'f32', '', 7, null, ['F32']];
const BAD_NUMBERS: unknown[] = [0, -1, 1.5, 2 ** 53, 1e300, '4', null, true, [], {}];
const CONFIG_FIELDS = ['hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size', 'image_size', 'patch_size', 'max_position_embeddings', 'vocab_size'];
/** Tensors OWL-ViT detection never reads (OwlViTModel's image–text logits). */
const OWL_UNUSED = ['owlvit.logit_scale', 'owlvit.visual_projection.weight'];

const sizeOf = (e: Entry): number => {
  const [b, end] = e.offsets as [number, number];
  return end - b;
};

function pack(tensors: Record<string, RawTensor>): { entries: Entry[]; data: Uint8Array } {
  let at = 0;
  const entries = Object.entries(tensors).map(([name, t]) => {
    const e = { name, dtype: t.dtype, shape: t.shape, offsets: [at, at + t.bytes.length] };
    at += t.bytes.length;
    return e;
  });
  return { entries, data: Buffer.concat(Object.values(tensors).map((t) => t.bytes)) };
}

function unpack(c: Checkpoint): Record<string, RawTensor> {
  return Object.fromEntries(c.entries.map((e) => [e.name, { dtype: e.dtype as string, shape: e.shape as number[], bytes: c.data.slice(...(e.offsets as [number, number])) }]));
}

function serialize(c: Checkpoint): Buffer {
  const header: Record<string, unknown> = c.metadata ? { __metadata__: c.metadata } : {};
  for (const e of c.entries) header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: e.offsets, ...e.extra };
  return rawSafetensors(JSON.stringify(header) + ' '.repeat(c.pad), c.data);
}

/** One fuzz case: the files to write and how to judge the load. */
interface Case {
  kind: string;
  what: string;
  expect: Expect;
  mentions: string[];
  /** The mutated .safetensors file (for shards: the second shard). */
  file: Buffer;
  config?: string;
  /** Other files of the folder (the first shard and the index), by name. */
  others: Record<string, Buffer | string>;
  allowNonFinite?: boolean;
}

interface Paths {
  dir: string;
  weights: string;
  config: string;
  /** What the loader is given: the folder, or the OpenAI file. */
  target: string;
}

const SHARDS = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
const INDEX = 'model.safetensors.index.json';

/** Splits a checkpoint into two shards and their index; the second shard is the one to mutate. */
function shard(raw: { tensors: Record<string, RawTensor>; metadata?: Record<string, string> }): { first: Buffer; second: Checkpoint; index: { metadata?: unknown; weight_map: Record<string, unknown> } } {
  const names = Object.keys(raw.tensors);
  const half = Math.ceil(names.length / 2);
  const part = (ns: string[]): Checkpoint => ({ ...pack(Object.fromEntries(ns.map((n) => [n, raw.tensors[n]!]))), metadata: raw.metadata, pad: 0 });
  const weightMap = Object.fromEntries(names.map((n, i) => [n, SHARDS[i < half ? 0 : 1]]));
  return { first: serialize(part(names.slice(0, half))), second: part(names.slice(half)), index: { metadata: { total_size: 0 }, weight_map: weightMap } };
}

/** A model's files from the fixtures: the checkpoint to mutate (parsed), other files, config.json. */
function unmutated(init: FuzzInit, model: Model) {
  const fixture = model === 'owlvit' ? join(init.fixtures, 'owlvit_tiny', 'model.safetensors') : join(init.fixtures, 'clip_tiny', model === 'clip-openai' ? 'weights_openai.safetensors' : 'weights_hf.safetensors');
  const raw = readRawSafetensors(fixture);
  const sharded = model === 'clip-sharded' ? shard(raw) : undefined;
  const c: Checkpoint = sharded?.second ?? { ...pack(raw.tensors), metadata: raw.metadata, pad: 0 };
  const others: Record<string, Buffer | string> = sharded ? { [SHARDS[0]!]: sharded.first, [INDEX]: JSON.stringify(sharded.index) } : {};
  const configText = model === 'clip-openai' ? undefined : readFileSync(join(init.fixtures, model === 'owlvit' ? 'owlvit_tiny' : 'clip_tiny', 'config.json'), 'utf8');
  return { c, sharded, others, configText };
}

/** Builds case `index`: a model's checkpoint with one seeded mutation. */
function makeCase(init: FuzzInit, model: Model, index: number, paths: Paths): Case {
  // xorshift's first outputs follow its seed closely: mix the seed and index, then warm up.
  const r = rng(Math.imul(init.seed ^ Math.imul(index + 1, 0x9e3779b1), 0x85ebca6b) ^ index);
  for (let i = 0; i < 8; i++) r();
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const int = (n: number) => Math.floor(r() * n);
  const { c, sharded, others, configText } = unmutated(init, model);
  // Errors name the shard or the index: both are in the folder.
  const fileMention = sharded ? paths.dir : paths.weights;
  const used = (name: string) => !(model === 'owlvit' && OWL_UNUSED.includes(name));
  const onTensor = (e: Entry): { expect: Expect; mentions: string[] } => (used(e.name) ? { expect: 'error', mentions: [fileMention, JSON.stringify(e.name)] } : { expect: 'either', mentions: [fileMention] });
  const kinds = ['dtype', 'dtype', 'shape', 'shape', 'offsets', 'offsets', 'drop', 'rename', 'nonfinite', 'truncate', 'append', 'header-length', 'flip', 'flip', 'benign', 'benign', ...(configText ? ['config', 'config', 'config'] : []), ...(sharded ? ['index', 'index', 'index'] : [])];
  const kind = pick(kinds);
  const done = (what: string, judge: { expect: Expect; mentions: string[] }, file = serialize(c), extra: Partial<Case> = {}): Case => ({ kind, what, ...judge, file, config: configText, others, ...extra });
  const e = pick(c.entries);
  switch (kind) {
    case 'dtype': {
      const dtype = pick(DTYPES.filter((d) => d !== e.dtype));
      e.dtype = dtype;
      return done(`${e.name} dtype ${JSON.stringify(dtype)}`, onTensor(e));
    }
    case 'shape': {
      const shape = [...(e.shape as number[])];
      const op = int(4);
      if (op === 0 && shape.length) {
        const k = int(shape.length);
        (shape as unknown[])[k] = pick([shape[k]! + 1, shape[k]! - 1, shape[k]! * 2, ...BAD_NUMBERS]);
      } else if (op === 1) shape.splice(int(shape.length + 1), 0, 1);
      else if (op === 2 && shape.length >= 2) shape.reverse();
      else shape.splice(0, shape.length, shape.reduce((a, b) => a * b, 1));
      if (JSON.stringify(shape) === JSON.stringify(e.shape)) return done(`${e.name} shape unchanged`, { expect: 'same', mentions: [] });
      e.shape = shape;
      // A logit scale stored as [] or [1] is the same number.
      const judge = /logit_scale$/.test(e.name) && shape.length <= 1 && shape[0] === 1 ? { expect: 'either' as const, mentions: [fileMention] } : onTensor(e);
      return done(`${e.name} shape ${JSON.stringify(shape)}`, judge);
    }
    case 'offsets': {
      const [b, end] = e.offsets as [number, number];
      const others = c.entries.filter((o) => sizeOf(o) !== sizeOf(e));
      const k = pick([1, 2, 4, 8, end - b]) * pick([1, -1]);
      const options: unknown[] = [[b + k, end + k], [b + k, end], [b, end + k], [b, b], [end, b], [-4, end], [b, 2 ** 53], [b + 0.5, end], [String(b), end], [b], [b, end, end], null];
      if (others.length) options.push(pick(others).offsets);
      e.offsets = pick(options);
      return done(`${e.name} data_offsets ${JSON.stringify(e.offsets)}`, { expect: 'error', mentions: [fileMention] });
    }
    case 'drop': {
      const t = unpack(c);
      delete t[e.name];
      Object.assign(c, pack(t));
      return done(`without ${e.name}`, onTensor(e));
    }
    case 'rename': {
      const t = unpack(c);
      const renamed = pick([`${e.name}_`, e.name.replace(/\.(\w+)$/, '.x$1'), e.name.toUpperCase(), ` ${e.name}`].filter((n) => n !== e.name));
      const out: Record<string, RawTensor> = {};
      for (const [k, v] of Object.entries(t)) out[k === e.name ? renamed : k] = v;
      Object.assign(c, pack(out));
      return done(`${e.name} renamed ${JSON.stringify(renamed)}`, onTensor(e));
    }
    case 'nonfinite': {
      const [b, end] = e.offsets as [number, number];
      const count = (end - b) / 4;
      const at = int(count);
      const value = pick([NaN, Infinity, -Infinity]);
      if (!count) return done(`${e.name} empty`, { expect: 'same', mentions: [] });
      new DataView(c.data.buffer, c.data.byteOffset).setFloat32(b + 4 * at, value, true);
      const allowNonFinite = r() < 0.3;
      const judge = allowNonFinite ? { expect: 'loads' as const, mentions: [] } : onTensor(e);
      return done(`${e.name}[${at}] = ${value}${allowNonFinite ? ' (allowed)' : ''}`, judge, serialize(c), { allowNonFinite });
    }
    case 'truncate': {
      const file = serialize(c);
      const n = pick([int(8), 8 + int(64), int(file.length), file.length - 1 - int(16)]);
      return done(`truncated to ${n} of ${file.length} bytes`, { expect: 'error', mentions: [fileMention] }, file.subarray(0, Math.max(0, n)));
    }
    case 'append': {
      const file = serialize(c);
      const extra = Buffer.from(Array.from({ length: 1 + int(64) }, () => int(256)));
      return done(`${extra.length} bytes appended`, { expect: 'error', mentions: [fileMention] }, Buffer.concat([file, extra]));
    }
    case 'header-length': {
      const file = serialize(c);
      const n = file.readBigUInt64LE(0);
      const value = pick([n + 1n, n - 1n, n + BigInt(1 + int(8)), n - BigInt(1 + int(8)), 0n, 2n, BigInt(file.length), BigInt(file.length - 8), 2n ** 63n, 2n ** 64n - 1n, n + 2n ** 32n]);
      file.writeBigUInt64LE(value, 0);
      return done(`header length ${value} (was ${n})`, { expect: 'error', mentions: [fileMention] }, file);
    }
    case 'flip': {
      const file = serialize(c);
      const n = Number(file.readBigUInt64LE(0));
      const at = 8 + int(n);
      const from = file[at]!;
      file[at] = pick([int(256), ...Buffer.from('"{}[],:0123456789 \\eE-.FIUB')]);
      if (file[at] === from) return done('flip to the same byte', { expect: 'same', mentions: [] }, file);
      return done(`header byte ${at - 8} ${JSON.stringify(String.fromCharCode(from))} → ${JSON.stringify(String.fromCharCode(file[at]!))}`, { expect: 'either', mentions: [fileMention] }, file);
    }
    case 'benign': {
      const op = int(4);
      if (op === 0) {
        // The data in another order, offsets following.
        const t = unpack(c);
        const names = Object.keys(t).sort(() => r() - 0.5);
        Object.assign(c, pack(Object.fromEntries(names.map((k) => [k, t[k]!]))));
      } else if (op === 1) c.entries.sort(() => r() - 0.5);
      else if (op === 2) c.pad = 1 + int(15);
      else c.metadata = op === 3 && r() < 0.5 ? undefined : { ...c.metadata, fuzz: String(index) };
      for (const x of c.entries) if (r() < 0.05) x.extra = { note: 'ignored' };
      return done(['data reordered', 'header reordered', 'header padded', 'metadata changed'][op]!, { expect: 'same', mentions: [] });
    }
    case 'config': {
      const config = JSON.parse(configText!) as Record<string, Record<string, unknown>>;
      const tower = pick(['vision_config', 'text_config'] as const);
      const otherTower = tower === 'vision_config' ? ['max_position_embeddings', 'vocab_size'] : ['image_size', 'patch_size'];
      const field = pick(CONFIG_FIELDS.filter((f) => !otherTower.includes(f)));
      const old = config[tower]![field] as number;
      const value = r() < 0.15 ? undefined : pick([old + 1, old * 2, old - 1, 1e9, ...BAD_NUMBERS]);
      if (value === undefined) delete config[tower]![field];
      else config[tower]![field] = value;
      const width = config[tower]!.hidden_size;
      const heads = config[tower]!.num_attention_heads ?? (tower === 'vision_config' ? 12 : 8);
      // A head count that divides the width fits any weights: the load may succeed.
      const fits = field === 'num_attention_heads' && typeof heads === 'number' && Number.isInteger(heads) && heads > 0 && typeof width === 'number' && width % heads === 0;
      if (value === old) return done(`${tower}.${field} unchanged`, { expect: 'same', mentions: [] }, serialize(c), { config: JSON.stringify(config) });
      const judge = fits ? { expect: 'either' as const, mentions: [paths.config] } : { expect: 'error' as const, mentions: [paths.config, field] };
      return done(`${tower}.${field} = ${JSON.stringify(value)}`, judge, serialize(c), { config: JSON.stringify(config) });
    }
    case 'index': {
      const idx = sharded!.index;
      const map = idx.weight_map;
      const name = pick(Object.keys(map));
      const indexPath = join(paths.dir, INDEX);
      const op = int(8);
      let text: string | undefined;
      let what: string;
      let judge: { expect: Expect; mentions: string[] } = { expect: 'error', mentions: [indexPath] };
      if (op === 0) {
        // The shard is still opened (another entry lists it), so the tensor may still be found.
        delete map[name];
        what = `${name} not listed`;
        judge = { expect: 'either', mentions: [paths.dir] };
      } else if (op === 1) {
        map[name] = map[name] === SHARDS[0] ? SHARDS[1] : SHARDS[0];
        what = `${name} listed in the other shard`;
        judge.mentions.push(JSON.stringify(name));
      } else if (op === 2) {
        map[name] = 'model-00003-of-00002.safetensors';
        what = `${name} in a missing shard`;
        judge = { expect: 'error', mentions: [join(paths.dir, 'model-00003-of-00002.safetensors')] };
      } else if (op === 3) {
        map[name] = pick(['../model.safetensors', '/etc/passwd', '', 5, null, ['x'], 'a/../../b']);
        what = `${name} in shard ${JSON.stringify(map[name])}`;
        judge.mentions.push(JSON.stringify(name));
      } else if (op === 4) {
        (idx as Record<string, unknown>).weight_map = pick([[], null, {}, 'x', undefined]);
        what = `weight_map ${JSON.stringify(idx.weight_map)}`;
      } else if (op === 5) {
        text = JSON.stringify(idx);
        text = text.slice(0, int(text.length));
        what = `index truncated to ${text.length} characters`;
      } else if (op === 6) {
        text = JSON.stringify(idx).replace('"weight_map":{', `"weight_map":{${JSON.stringify(name)}:"${SHARDS[0]}",`);
        what = `${name} listed twice`;
      } else {
        idx.metadata = { total_size: int(1e9), note: 'ignored' };
        what = 'index metadata changed';
        judge = { expect: 'same', mentions: [] };
      }
      return done(what, judge, serialize(c), { others: { ...others, [INDEX]: text ?? JSON.stringify(idx) } });
    }
  }
  throw new Error(`unknown kind ${kind}`);
}

/** Every weight of a loaded model, by tower and canonical name, read back from the GPU. */
async function snapshot(maps: Record<string, ReadonlyMap<string, Tensor> | undefined>, logitScale?: number): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [tower, m] of Object.entries(maps)) for (const [k, t] of m ?? []) out.set(`${tower}/${k}`, (await t.read()) as Float32Array);
  if (logitScale !== undefined) out.set('logitScale', new Float32Array([logitScale]));
  return out;
}

function identical(a: Map<string, Float32Array>, b: Map<string, Float32Array>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, x] of a) {
    const y = b.get(k);
    if (!y || y.length !== x.length || !Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength))) return false;
  }
  return true;
}

/** Loads a checkpoint with its model's loader: the weights, or the error. */
async function load(gpu: Gpu, model: Model, path: string, allowNonFinite?: boolean): Promise<Map<string, Float32Array>> {
  if (model === 'owlvit') {
    const det = await OwlVitDetector.load(gpu, path, { allowNonFinite });
    try {
      return await snapshot(det.weights);
    } finally {
      det.dispose();
    }
  }
  const clip = await ClipModel.load(gpu, path, model === 'clip-openai' ? { heads: { vision: 2, text: 4 }, allowNonFinite } : { allowNonFinite });
  try {
    return await snapshot(clip.weights, clip.logitScale);
  } finally {
    clip.dispose();
  }
}

async function main(): Promise<void> {
  // Unused-tensor warnings would flood the test's output.
  console.warn = () => undefined;
  const gpu = await openGpu();
  const tmp = mkdtempSync(join(tmpdir(), 'ovgpu-fuzz-'));
  let init: FuzzInit | undefined;
  const baselines = new Map<Model, Map<string, Float32Array>>();
  const paths = (model: Model): Paths => {
    const dir = join(tmp, model);
    mkdirSync(dir, { recursive: true });
    const weights = join(dir, model === 'clip-openai' ? 'openai.safetensors' : model === 'clip-sharded' ? SHARDS[1]! : 'model.safetensors');
    return { dir, weights, config: join(dir, 'config.json'), target: model === 'clip-openai' ? weights : dir };
  };
  const write = (p: Paths, c: Case) => {
    writeFileSync(p.weights, c.file);
    if (c.config !== undefined) writeFileSync(p.config, c.config);
    for (const [name, content] of Object.entries(c.others)) writeFileSync(join(p.dir, name), content);
  };
  process.on('message', (msg: { init?: FuzzInit; index?: number; model?: Model; done?: boolean }) => {
    void (async () => {
      if (msg.init) {
        init = msg.init;
        for (const model of MODELS) {
          const p = paths(model);
          const u = unmutated(init, model);
          write(p, { kind: 'baseline', what: '', expect: 'same', mentions: [], file: serialize(u.c), config: u.configText, others: u.others });
          baselines.set(model, await load(gpu, model, p.target));
        }
        process.send!({ ready: true });
        return;
      }
      if (msg.done) {
        rmSync(tmp, { recursive: true, force: true });
        gpu.close();
        process.disconnect();
        return;
      }
      const model = msg.model!;
      const p = paths(model);
      const c = makeCase(init!, model, msg.index!, p);
      write(p, c);
      const report: FuzzReport = { index: msg.index!, model, kind: c.kind, what: c.what, expect: c.expect, mentions: c.mentions, outcome: 'loaded', ms: 0 };
      const t0 = performance.now();
      try {
        const weights = await load(gpu, model, p.target, c.allowNonFinite);
        report.same = identical(weights, baselines.get(model)!);
      } catch (err) {
        report.outcome = 'error';
        report.isGpuError = err instanceof GpuError;
        report.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      }
      report.ms = performance.now() - t0;
      process.send!(report);
    })();
  });
}

void main();

// The gradient oracles of ../shared/fixtures/grad (see its README, section grad/): one file per op
// plus index.json. Their `_f64` tensors are F64, which the library's reader does not load (weights
// never are), so this reads the files itself: F64 as Float64Array, F32 and F16 as Float32Array,
// I32 / I64 as Int32Array, U8 / BOOL as Uint8Array.
import { readFileSync } from 'node:fs';
import { fixturePath } from './fixtures.js';
import { decodeTensorData } from '../../src/tensor.js';

export interface GradCase {
  name: string;
  params: Record<string, unknown>;
  inputs: Record<string, { dtype: string; shape: number[] }>;
  outputs: Record<string, number[]>;
  differentiable: string[];
}

export interface GradTensor {
  shape: number[];
  data: Float64Array | Float32Array | Int32Array | Uint8Array;
}

const files = new Map<string, Map<string, GradTensor>>();

function readAll(path: string): Map<string, GradTensor> {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.toString('utf8', 8, 8 + headerLength)) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, GradTensor>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const raw = bytes.subarray(8 + headerLength + e.data_offsets[0], 8 + headerLength + e.data_offsets[1]);
    const aligned = Uint8Array.from(raw).buffer;
    let data: GradTensor['data'];
    if (e.dtype === 'F64') data = new Float64Array(aligned);
    else if (e.dtype === 'F32') data = new Float32Array(aligned);
    else if (e.dtype === 'I32') data = new Int32Array(aligned);
    else if (e.dtype === 'F16') data = decodeTensorData(aligned, 'f16', raw.length / 2) as Float32Array;
    else if (e.dtype === 'I64') data = Int32Array.from(new BigInt64Array(aligned), Number);
    else if (e.dtype === 'U8' || e.dtype === 'BOOL') data = new Uint8Array(aligned);
    else throw new Error(`${path}: tensor ${name} has dtype ${e.dtype}, not read by this helper`);
    out.set(name, { shape: e.shape, data });
  }
  return out;
}

/** A getter for the tensors of any fixture file with F64 tensors (e.g. coop/coop.safetensors), read once. */
export function fixtureTensors(...parts: string[]): (name: string) => GradTensor {
  const path = fixturePath(...parts);
  let tensors = files.get(path);
  if (!tensors) files.set(path, (tensors = readAll(path)));
  const all = tensors;
  return (name) => {
    const t = all.get(name);
    if (!t) throw new Error(`fixture tensor ${name} not in ${parts.join('/')}`);
    return t;
  };
}

/** The cases of one op in index.json, and a getter for its tensors (`<case>.<name>`). */
export function gradFixture(op: string): { cases: GradCase[]; tensor: (name: string) => GradTensor } {
  const index = JSON.parse(readFileSync(fixturePath('grad', 'index.json'), 'utf8')) as { ops: Record<string, { file: string; cases: GradCase[] }> };
  const entry = index.ops[op];
  if (!entry) throw new Error(`grad fixture op ${op} not in index.json`);
  return { cases: entry.cases, tensor: fixtureTensors('grad', entry.file) };
}

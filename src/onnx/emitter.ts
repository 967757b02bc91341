// Builds an ONNX graph as plain objects for protobufjs: node and initializer bookkeeping, value
// names, and small helpers for the constants that decompositions need.
import { GpuError } from '../gpu/errors.js';
import { sizeOf, type DType } from '../dtype.js';
import { ONNX_DTYPE } from './schema.js';

export interface OnnxAttribute {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  ints?: number[];
}

export interface OnnxNode {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  attribute: OnnxAttribute[];
}

export interface OnnxTensor {
  name: string;
  dims: number[];
  data_type: number;
  raw_data: Uint8Array;
}

type AttrValue = number | string | readonly number[] | { float: number };

const ATTR = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 } as const;

function attribute(name: string, v: AttrValue): OnnxAttribute {
  if (typeof v === 'string') return { name, type: ATTR.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === 'number') return { name, type: ATTR.INT, i: v };
  if (Array.isArray(v)) return { name, type: ATTR.INTS, ints: [...(v as number[])] };
  return { name, type: ATTR.FLOAT, f: (v as { float: number }).float };
}

/** ONNX's element type code for an ovgpu dtype. */
export function onnxElementType(dtype: DType, what: string): number {
  const code = (ONNX_DTYPE as Record<string, number>)[dtype];
  if (code === undefined) throw new GpuError('exportOnnx', `${what}: dtype ${dtype} has no ONNX element type here`);
  return code;
}

/** Largest int64: a Slice end that means "to the end of the axis" whatever its length. */
export const TO_END = 2n ** 63n - 1n;

/**
 * Accumulates nodes and initializers. `node` returns its output names (`outputs` of them, named
 * after the node); `i64` / `f32` add constant initializers, deduplicated by content.
 */
export class OnnxEmitter {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  readonly #used = new Set<string>();
  readonly #constants = new Map<string, string>();

  /** A fresh name from `base` (made unique with a counter). */
  fresh(base: string): string {
    let name = base;
    for (let k = 1; this.#used.has(name); k++) name = `${base}_${k}`;
    this.#used.add(name);
    return name;
  }

  /** Reserves names that are given (graph inputs): later fresh names avoid them. */
  reserve(name: string): void {
    if (this.#used.has(name)) throw new GpuError('exportOnnx', `${JSON.stringify(name)} names both an input and an output: ONNX values share one namespace, rename one`);
    this.#used.add(name);
  }

  node(opType: string, inputs: readonly string[], name: string, attributes: Record<string, AttrValue | undefined> = {}, outputs = 1): string[] {
    const node = this.fresh(name);
    const out = Array.from({ length: outputs }, (_, i) => this.fresh(outputs === 1 ? node : `${node}:${i}`));
    this.nodes.push({
      input: [...inputs],
      output: out,
      name: node,
      op_type: opType,
      attribute: Object.entries(attributes).flatMap(([k, v]) => (v === undefined ? [] : [attribute(k, v)])),
    });
    return out;
  }

  /** The single output of an op. */
  op(opType: string, inputs: readonly string[], name: string, attributes: Record<string, AttrValue | undefined> = {}): string {
    return this.node(opType, inputs, name, attributes)[0]!;
  }

  /** An initializer from raw little-endian bytes. */
  tensor(name: string, dims: readonly number[], dataType: number, bytes: Uint8Array): string {
    const key = `${dataType}|${dims.join(',')}|${bytes.length <= 64 ? Array.from(bytes).join(',') : ''}`;
    if (bytes.length <= 64) {
      const known = this.#constants.get(key);
      if (known) return known;
    }
    const unique = this.fresh(name);
    this.initializers.push({ name: unique, dims: [...dims], data_type: dataType, raw_data: bytes });
    if (bytes.length <= 64) this.#constants.set(key, unique);
    return unique;
  }

  /** An int64 constant (shape [n] unless `dims` says otherwise, e.g. [] for a scalar). */
  i64(values: readonly (number | bigint)[], dims: readonly number[] = [values.length]): string {
    const data = BigInt64Array.from(values, (v) => BigInt(v));
    return this.tensor('const_i64', dims, ONNX_DTYPE.i64, new Uint8Array(data.buffer));
  }

  /** An f32 constant of `dims` (a scalar by default). */
  f32(values: readonly number[] | Float32Array, dims: readonly number[] = []): string {
    if (sizeOf(dims) !== values.length) throw new GpuError('exportOnnx', `constant of ${values.length} values for dims [${dims.join(', ')}]`);
    const data = Float32Array.from(values);
    return this.tensor('const_f32', dims, ONNX_DTYPE.f32, new Uint8Array(data.buffer));
  }
}

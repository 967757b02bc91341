import type { Gpu } from '../gpu/gpu.js';
import type { DType } from '../dtype.js';
import { check } from '../gpu/errors.js';
import { paddedByteLength } from '../tensor.js';
import { BYTES_PER_ELEMENT, shapeString } from '../dtype.js';

/**
 * Whether kernels use their CPU-adapter settings: the one rule every kernel chooses its variant,
 * tile and workgroup constants by. It follows the Gpu's profile (openGpu's `profile` option; 'auto'
 * detects CPU adapters such as lavapipe), so tests can run either set of settings on any adapter.
 */
export function isCpuAdapter(gpu: Gpu): boolean {
  return gpu.profile === 'cpu';
}

/** Whether subgroup variants (attention, its backward, matmul's register_subgroup) can run: the feature, with subgroups of at least 8 lanes. */
export function subgroupsUsable(gpu: Gpu): boolean {
  return gpu.features.has('subgroups') && (gpu.info.subgroupMinSize ?? 0) >= 8;
}

/**
 * Workgroup size and invocations per row (TPR) of the row-wise kernels (softmax, layerNorm,
 * l2norm), whose shaders run WG / TPR rows per workgroup. Elsewhere than on CPU adapters: a
 * workgroup of `gpuWg` per row, reduced through workgroup memory (not tuned on hardware here).
 * On CPU adapters (lavapipe), one invocation per row, with no workgroup memory and no barriers:
 * at CLIP / OWL-ViT shapes that took softmax over 96x50 rows of 50 from 30 to 0.9 ms, layerNorm
 * 400x768 from 4.0 to 1.2 ms and l2norm 577x512 from 15 to 0.42 ms (8 per row: 3.7, 1.8 and
 * 0.72 ms). Workgroups hold up to 64 rows, fewer so that there are several for the cores to share
 * (layerNorm 50x768: 0.55 ms by rows, 0.21 ms in one workgroup of 64, 0.17 ms in 16s); under 8
 * rows, a workgroup per row keeps a long row on all SIMD lanes.
 */
export function rowLayout(gpu: Gpu, rows: number, gpuWg: number): { WG: number; TPR: number } {
  if (!isCpuAdapter(gpu)) return { WG: gpuWg, TPR: gpuWg };
  if (rows < 8) return { WG: 64, TPR: 64 };
  return { WG: Math.min(64, Math.max(8, 2 ** Math.floor(Math.log2(rows / 4)))), TPR: 1 };
}

/** What a kernel needs to know about a tensor to check and plan it. */
export interface TensorInfo {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** How a program uses one storage binding. */
export type Access = 'read' | 'write';

/**
 * One compiled shader. Binding 0 is always the uniform block (shapes and scalars, so one pipeline
 * serves every shape); storage bindings 1..n follow `bindings`. The pipeline cache key is
 * `name`, `key` and `constants`: it must describe the specialisation, never the shapes.
 */
export interface Program {
  readonly name: string;
  readonly key: string;
  readonly code: string;
  readonly constants?: Readonly<Record<string, number>>;
  readonly bindings: readonly Access[];
  readonly entryPoint?: string;
}

/**
 * Bytes [offset, offset + size) of one of a kernel's tensors, bound in place of the whole tensor:
 * one chunk of a kernel split at the binding limit (see `splitUnits`).
 */
export interface TensorSlice {
  /** An index into [...inputs, ...outputs, ...scratch]. */
  readonly tensor: number;
  /** From the tensor's start; a multiple of the device's minStorageBufferOffsetAlignment. */
  readonly offset: number;
  readonly size: number;
}

/** One dispatch of a program over a kernel's tensors. */
export interface Dispatch {
  readonly program: Program;
  /** For each storage binding, an index into [...inputs, ...outputs, ...scratch], or a slice of one. */
  readonly tensors: readonly (number | TensorSlice)[];
  readonly uniforms: ArrayBuffer;
  readonly workgroups: readonly [number, number, number];
}

/**
 * A sub-kernel's dispatch inside another kernel's plan: its tensor indices (and those of its
 * slices) mapped through `map` to the other plan's [...inputs, ...outputs, ...scratch], or to a
 * slice of one (a sub-kernel run on one chunk of the other plan's tensors).
 */
export function remapDispatch(d: Dispatch, map: readonly (number | TensorSlice)[]): Dispatch {
  const to = (t: number | TensorSlice): number | TensorSlice => {
    if (typeof t === 'number') return map[t]!;
    const m = map[t.tensor]!;
    return typeof m === 'number' ? { ...t, tensor: m } : { tensor: m.tensor, offset: m.offset + t.offset, size: t.size };
  };
  return { ...d, tensors: d.tensors.map(to) };
}

/** What a kernel does for given inputs on a given device. */
export interface KernelPlan {
  readonly dispatches: readonly Dispatch[];
  /** Temporary tensors the dispatches need, freed after the run. */
  readonly scratch?: readonly TensorInfo[];
  /** Nominal floating-point operations, for GFLOP/s in benchmarks and profiles. */
  readonly flops?: number;
  /** Nominal bytes read and written, for GB/s. */
  readonly bytes?: number;
}

/**
 * A kernel's uniform description, used by the eager functions and by the graph executor alike.
 * `outputs` validates and infers shapes without a GPU (errors name the kernel and the argument);
 * `plan` chooses the programs and dispatch sizes for one device.
 */
export interface Kernel<Options> {
  readonly name: string;
  outputs(inputs: readonly TensorInfo[], options: Options): TensorInfo[];
  plan(gpu: Gpu, inputs: readonly TensorInfo[], outputs: readonly TensorInfo[], options: Options): KernelPlan;
}

/**
 * Packs uniform fields in order as 32-bit words. Plain numbers are u32; `{ f32 }` and `{ i32 }`
 * choose the other types. The result is padded to 16 bytes, as uniform structs are.
 */
export function uniforms(...fields: Array<number | { f32: number } | { i32: number }>): ArrayBuffer {
  const bytes = new ArrayBuffer(Math.max(16, Math.ceil(fields.length / 4) * 16));
  const view = new DataView(bytes);
  fields.forEach((f, i) => {
    if (typeof f === 'number') view.setUint32(i * 4, f, true);
    else if ('f32' in f) view.setFloat32(i * 4, f.f32, true);
    else view.setInt32(i * 4, f.i32, true);
  });
  return bytes;
}

/**
 * WGSL source for a storage dtype: the shader's `alias T = f32;` line is swapped for the dtype
 * (f16 also gets `enable f16;`). Shaders that only move data (copies) serve every dtype this way.
 */
export function specialize(code: string, dtype: DType): string {
  if (dtype === 'f32') return code;
  if (!/^alias T = f32;$/m.test(code)) throw new Error('specialize: shader has no `alias T = f32;` line');
  const swapped = code.replace(/^alias T = f32;$/m, `alias T = ${dtype};`);
  return dtype === 'f16' ? 'enable f16;\n' + swapped : swapped;
}

/**
 * Workgroup counts for `count` invocations in groups of `size`, folded into 2-D when one
 * dimension's limit would be exceeded. Shaders recover the flat index with `flatIndex`-style
 * math: (wid.y * num_workgroups.x + wid.x) * size + lid.x.
 */
export function grid1d(gpu: Gpu, count: number, size: number): [number, number, number] {
  const groups = Math.max(1, Math.ceil(count / size));
  const max = gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535;
  if (groups <= max) return [groups, 1, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y, 1];
}

/**
 * Workgroup counts for an x by y grid. y is folded into z when it exceeds the per-dimension limit;
 * shaders recover the row with wid.z * num_workgroups.y + wid.y (and must skip rows past y).
 */
export function grid2d(gpu: Gpu, x: number, y: number): [number, number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535;
  check(x <= max, 'grid2d', `${x} workgroups along x exceed the device limit of ${max}`);
  if (y <= max) return [Math.max(1, x), Math.max(1, y), 1];
  const z = Math.ceil(y / max);
  return [Math.max(1, x), Math.ceil(y / z), z];
}

/**
 * The largest storage binding in bytes, rounded down to whole words: WebGPU's
 * maxStorageBufferBindingSize, or the lower value `openGpu({ limits })` forces for tests.
 */
export function bindingLimit(gpu: Gpu): number {
  return Math.floor((gpu.limits.maxStorageBufferBindingSize ?? 134217728) / 4) * 4;
}

/** Bytes the binding of a whole tensor covers. */
export const bindingBytes = (t: TensorInfo): number => paddedByteLength(t.shape, t.dtype);

/** Throws before dispatch, naming the op and saying what to do, unless `t` fits one binding. */
export function checkBindable(gpu: Gpu, op: string, name: string, t: TensorInfo, advice: string): void {
  const limit = bindingLimit(gpu);
  check(
    bindingBytes(t) <= limit,
    op,
    () => `${name} (${t.dtype} ${shapeString(t.shape)}, ${bindingBytes(t)} bytes) is bound whole and exceeds the device's maxStorageBufferBindingSize of ${limit} bytes: ${advice}`,
  );
}

/**
 * The binding of elements [first, end) of a kernel's tensor `tensor` (an index into [...inputs,
 * ...outputs, ...scratch]), for a shader that subtracts `base` from the element indices it computes:
 * the whole tensor (base 0) when it fits the binding limit, otherwise a slice starting at the
 * aligned offset at or before `first`. The slice spans at most (end - first) elements plus the
 * offset alignment; callers size their ranges to leave that room (see `sliceCapacity`).
 */
export function elementSlice(gpu: Gpu, tensor: number, info: TensorInfo, first: number, end: number): { bind: number | TensorSlice; base: number } {
  if (bindingBytes(info) <= bindingLimit(gpu)) return { bind: tensor, base: 0 };
  const bytes = BYTES_PER_ELEMENT[info.dtype];
  const align = Math.max(4, gpu.limits.minStorageBufferOffsetAlignment ?? 256);
  const offset = Math.floor((first * bytes) / align) * align;
  const size = Math.min(bindingBytes(info), Math.ceil((end * bytes) / 4) * 4) - offset;
  return { bind: { tensor, offset, size }, base: offset / bytes };
}

/** Bytes of a range that `elementSlice` can always bind: the binding limit less one offset alignment. */
export function sliceCapacity(gpu: Gpu): number {
  return bindingLimit(gpu) - Math.max(4, gpu.limits.minStorageBufferOffsetAlignment ?? 256);
}

/** A tensor of a kernel split along its leading axis of units (rows, boxes, queries, indices). */
export interface SplitTensor {
  /** An index into [...inputs, ...outputs, ...scratch]. */
  readonly tensor: number;
  /** For error messages: 'boxes', 'output', … */
  readonly name: string;
  readonly info: TensorInfo;
  /** Bytes per unit: the tensor holds units · unitBytes bytes. */
  readonly unitBytes: number;
}

/** Units [first, first + count) of a split kernel, and how to bind each split tensor for them. */
export interface UnitChunk {
  readonly first: number;
  readonly count: number;
  /** The binding of split tensor `tensor` for this chunk: the plain index when there is one chunk. */
  bind(tensor: number): number | TensorSlice;
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * Splits `units` units (of `what`: 'boxes', 'rows', …) into chunks in which every split tensor's
 * range fits the binding limit and starts at an offset the device can bind. A single chunk binding
 * whole tensors when everything fits, so small calls dispatch exactly as before. Throws before
 * dispatch, naming the op, when even the smallest aligned chunk does not fit.
 */
export function splitUnits(gpu: Gpu, op: string, what: string, units: number, tensors: readonly SplitTensor[]): UnitChunk[] {
  const limit = bindingLimit(gpu);
  if (tensors.every((t) => bindingBytes(t.info) <= limit)) return [{ first: 0, count: units, bind: (t) => t }];
  // The fewest units whose bytes are a multiple of the offset alignment in every split tensor.
  const align = Math.max(4, gpu.limits.minStorageBufferOffsetAlignment ?? 256);
  const step = tensors.reduce((s, t) => {
    const own = align / gcd(t.unitBytes, align);
    return (s * own) / gcd(s, own);
  }, 1);
  const widest = tensors.reduce((a, t) => (t.unitBytes > a.unitBytes ? t : a));
  const per = Math.floor(Math.floor(limit / widest.unitBytes) / step) * step;
  check(
    per > 0,
    op,
    () =>
      `${widest.name} (${widest.info.dtype} ${shapeString(widest.info.shape)}) exceeds the device's maxStorageBufferBindingSize of ${limit} bytes, ` +
      `and splitting it by ${what} cannot help: ${step} ${what} (the fewest that keep chunks aligned) take ${step * widest.unitBytes} bytes of it. ` +
      `Make the other dimensions smaller (or use f16).`,
  );
  const chunks: UnitChunk[] = [];
  for (let first = 0; first < units; first += per) {
    const count = Math.min(per, units - first);
    const slices = new Map(
      tensors.map((t) => {
        const offset = first * t.unitBytes;
        // The last chunk also covers the tensor's padding to whole words.
        const size = first + count === units ? bindingBytes(t.info) - offset : count * t.unitBytes;
        return [t.tensor, { tensor: t.tensor, offset, size }] as const;
      }),
    );
    chunks.push({ first, count, bind: (t) => slices.get(t) ?? t });
  }
  return chunks;
}

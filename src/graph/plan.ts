import type { Gpu } from '../gpu/gpu.js';
import { GpuError } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf, type ReadArray } from '../dtype.js';
import { Tensor, decodeTensorData, encodeTensorData, type TensorData } from '../tensor.js';
import type { Kernel, KernelPlan, TensorInfo } from '../kernels/program.js';
import { contiguousStrides, stridedCopyKernel } from '../kernels/copy.js';
import { checkBindings, createBindGroups, encodeDispatches, packUniforms, preparePipelines, scopedWithPipelines } from '../kernels/runtime.js';
import type { GraphBuilder, Value } from './builder.js';
import { planMemory } from './memory.js';
import { releaseConstant, retainConstant } from './constants.js';

const USAGE = { MAP_READ: 0x01, COPY_SRC: 0x04, COPY_DST: 0x08, UNIFORM: 0x40, STORAGE: 0x80, QUERY_RESOLVE: 0x200 };

/** Where a value's bytes live once compiled. */
interface Slot {
  kind: 'input' | 'constant' | 'fill' | 'shared';
  bytes: number;
  first: number;
  last: number;
  buffer?: GPUBuffer;
}

interface Ref {
  slot: Slot;
  byteOffset: number;
  info: TensorInfo;
}

interface CompiledNode {
  label: string;
  kernel: Kernel<unknown>;
  inputs: Ref[];
  outputs: Ref[];
  scratch: Ref[];
  plan: KernelPlan;
}

export interface NodeTiming {
  label: string;
  kernel: string;
  /** Output shapes, e.g. "[50, 3072]". */
  shape: string;
  ms: number;
  flops?: number;
  bytes?: number;
}

export interface RunProfile {
  /** 'timestamp': per-node GPU times from timestamp queries; 'wall': only the whole run's time. */
  source: 'timestamp' | 'wall';
  totalMs: number;
  nodes: NodeTiming[];
}

export interface RunOptions {
  /** Names of the outputs to read back (default: all). */
  outputs?: readonly string[];
  profile?: boolean;
  /**
   * Outputs copied on the GPU, in the run's one submit, into these tensors (same dtype and shape):
   * results that later runs of other plans take as inputs without a round trip through the host.
   */
  copyTo?: Readonly<Record<string, Tensor>>;
}

export interface RunResult {
  outputs: Record<string, ReadArray>;
  profile?: RunProfile;
}

export type GraphInput = TensorData | Tensor;

export interface MemoryReport {
  /** Bytes of the shared buffers holding every intermediate value: the peak intermediate memory. */
  intermediateBytes: number;
  /** How many shared buffers hold them. */
  intermediateBuffers: number;
  /** What one buffer per intermediate value would have needed. */
  unsharedBytes: number;
  /** The largest single intermediate value. */
  largestBytes: number;
  inputBytes: number;
  constantBytes: number;
  /** Buffers of `fill` values (one per dtype and value, as large as the largest). */
  fillBytes: number;
  /**
   * Every buffer the plan owns (intermediates, inputs, uniforms, staging, timestamps): what dispose()
   * frees. An output's staging buffer is made on its first read, so this grows then: a training
   * step that reads only its loss never holds a host-readable copy of every gradient.
   */
  ownedBytes: number;
}

/** An output's place and, once it has been read, the buffer it is read back through. */
interface PlanOutput {
  ref: Ref;
  copyOffset: number;
  copyBytes: number;
  staging?: GPUBuffer;
}

const padded = (n: number) => Math.max(4, Math.ceil(n / 4) * 4);
const bytesOf = (info: TensorInfo) => sizeOf(info.shape) * BYTES_PER_ELEMENT[info.dtype];

/**
 * A compiled graph. Pipelines come from the per-device cache, intermediates share buffers
 * planned by liveness, bind groups and uniforms are made once. `run` writes the inputs, encodes
 * every node into one command encoder and submits once; concurrent `run` calls on one plan are
 * serialised (each waits for the previous to finish). A plan serves one set of input shapes:
 * compile one plan per batch size (pipelines are shared between them through the cache).
 */
export class GraphPlan {
  readonly gpu: Gpu;
  readonly memory: MemoryReport;
  readonly inputInfos: ReadonlyMap<string, TensorInfo>;
  readonly outputInfos: ReadonlyMap<string, TensorInfo>;
  readonly nodeCount: number;
  /** The graph this plan was compiled from (exportOnnx reads it). */
  readonly graph: GraphBuilder;
  readonly #nodes: CompiledNode[];
  readonly #prepared: ReturnType<typeof createBindGroups>[];
  readonly #inputs: Map<string, Ref>;
  readonly #outputs: Map<string, PlanOutput>;
  readonly #buffers: GPUBuffer[];
  readonly #constants: Tensor[];
  readonly #timing?: { querySet: GPUQuerySet; resolve: GPUBuffer; staging: GPUBuffer };
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  /** @internal use GraphBuilder.compile */
  constructor(
    gpu: Gpu,
    parts: {
      nodes: CompiledNode[];
      prepared: ReturnType<typeof createBindGroups>[];
      inputs: Map<string, Ref>;
      outputs: Map<string, PlanOutput>;
      buffers: GPUBuffer[];
      constants: Tensor[];
      memory: MemoryReport;
      graph: GraphBuilder;
      timing?: { querySet: GPUQuerySet; resolve: GPUBuffer; staging: GPUBuffer };
    },
  ) {
    this.gpu = gpu;
    this.#nodes = parts.nodes;
    this.#prepared = parts.prepared;
    this.#inputs = parts.inputs;
    this.#outputs = parts.outputs;
    this.#buffers = parts.buffers;
    this.#constants = parts.constants;
    this.#timing = parts.timing;
    this.memory = parts.memory;
    this.graph = parts.graph;
    this.nodeCount = parts.nodes.length;
    this.inputInfos = new Map([...parts.inputs].map(([k, r]) => [k, r.info]));
    this.outputInfos = new Map([...parts.outputs].map(([k, o]) => [k, o.ref.info]));
  }

  /** Runs the graph once: one submit, reading back only the requested outputs. */
  run(inputs: Record<string, GraphInput>, options: RunOptions = {}): Promise<RunResult> {
    if (this.#disposed) return Promise.reject(new GpuError('graph run', 'the plan was disposed'));
    // Validate now, so bad input is refused before anything is encoded (and before queueing).
    let wanted: string[];
    try {
      this.#checkInputs(inputs);
      wanted = [...(options.outputs ?? this.#outputs.keys())];
      for (const name of wanted) if (!this.#outputs.has(name)) throw new GpuError('graph run', `unknown output ${JSON.stringify(name)}; outputs are ${[...this.#outputs.keys()].join(', ')}`);
      this.#checkCopies(options.copyTo ?? {});
    } catch (err) {
      return Promise.reject(err);
    }
    const run = this.#queue.then(() => this.#run(inputs, wanted, !!options.profile, options.copyTo ?? {}));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #checkInputs(inputs: Record<string, GraphInput>): void {
    for (const name of Object.keys(inputs)) {
      if (!this.#inputs.has(name)) throw new GpuError('graph run', `unknown input ${JSON.stringify(name)}; inputs are ${[...this.#inputs.keys()].join(', ')}`);
    }
    for (const [name, ref] of this.#inputs) {
      const v = inputs[name];
      const { shape, dtype } = ref.info;
      if (v === undefined) throw new GpuError('graph run', `missing input ${JSON.stringify(name)} (${dtype} ${shapeString(shape)})`);
      if (v instanceof Tensor) {
        if (v.dtype !== dtype || v.shape.join() !== shape.join()) {
          throw new GpuError('graph run', `input ${JSON.stringify(name)} is ${v.dtype} ${shapeString(v.shape)}, expected ${dtype} ${shapeString(shape)}`);
        }
        continue;
      }
      const length = (v as ArrayLike<number>).length;
      if (length !== sizeOf(shape)) {
        throw new GpuError('graph run', `input ${JSON.stringify(name)} has ${length} elements, expected ${sizeOf(shape)} for ${dtype} ${shapeString(shape)}`);
      }
      const integer = dtype === 'i32' || dtype === 'u32';
      if (integer ? v instanceof Float32Array || v instanceof Float64Array : v instanceof Int32Array || v instanceof Uint32Array) {
        throw new GpuError('graph run', `input ${JSON.stringify(name)} is a ${v.constructor.name}, expected ${dtype} data`);
      }
    }
  }

  #checkCopies(copyTo: Readonly<Record<string, Tensor>>): void {
    for (const [name, t] of Object.entries(copyTo)) {
      const o = this.#outputs.get(name);
      if (!o) throw new GpuError('graph run', `copyTo: unknown output ${JSON.stringify(name)}; outputs are ${[...this.#outputs.keys()].join(', ')}`);
      const { shape, dtype } = o.ref.info;
      if (!(t instanceof Tensor) || t.disposed) throw new GpuError('graph run', `copyTo ${JSON.stringify(name)}: expected a live Tensor`);
      if (t.dtype !== dtype || t.shape.join() !== shape.join()) {
        throw new GpuError('graph run', `copyTo ${JSON.stringify(name)}: tensor is ${t.dtype} ${shapeString(t.shape)}, expected ${dtype} ${shapeString(shape)}`);
      }
      // copyBufferToBuffer moves whole 4-byte words: an odd f16 length copies its padding too (values
      // and tensors are padded to 4 bytes), but a start inside a word cannot be copied.
      if (o.ref.byteOffset % 4 !== 0) throw new GpuError('graph run', `copyTo ${JSON.stringify(name)}: the output starts inside a 4-byte word (an f16 view at an odd element)`);
    }
  }

  async #run(inputs: Record<string, GraphInput>, wanted: string[], profile: boolean, copyTo: Readonly<Record<string, Tensor>>): Promise<RunResult> {
    if (this.#disposed) throw new GpuError('graph run', 'the plan was disposed');
    // A model disposed while this run waited has destroyed the weights the plan binds: say so,
    // rather than let the submit fail validation.
    const gone = this.#constants.find((t) => t.disposed);
    if (gone) throw new GpuError('graph run', `constant ${gone} was disposed (its model was disposed while this call was in flight)`);
    const gpu = this.gpu;
    const timing = profile ? this.#timing : undefined;
    const staging = wanted.map((name) => this.#staging(name));
    const started = performance.now();
    await gpu.scoped('graph run', () => {
      const encoder = gpu.device.createCommandEncoder({ label: 'graph run' });
      for (const [name, ref] of this.#inputs) {
        const v = inputs[name]!;
        const bytes = padded(bytesOf(ref.info));
        if (v instanceof Tensor) encoder.copyBufferToBuffer(v.buffer, 0, ref.slot.buffer!, 0, bytes);
        else gpu.device.queue.writeBuffer(ref.slot.buffer!, 0, encodeTensorData(v, ref.info.dtype, sizeOf(ref.info.shape), `graph input ${name}`));
      }
      if (timing) {
        this.#prepared.forEach((prepared, i) => {
          const pass = encoder.beginComputePass({
            label: this.#nodes[i]!.label,
            timestampWrites: { querySet: timing.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
          });
          encodeDispatches(pass, prepared);
          pass.end();
        });
        encoder.resolveQuerySet(timing.querySet, 0, 2 * this.#nodes.length, timing.resolve, 0);
        encoder.copyBufferToBuffer(timing.resolve, 0, timing.staging, 0, 16 * this.#nodes.length);
      } else {
        const pass = encoder.beginComputePass({ label: 'graph' });
        for (const prepared of this.#prepared) encodeDispatches(pass, prepared);
        pass.end();
      }
      wanted.forEach((name, i) => {
        const o = this.#outputs.get(name)!;
        encoder.copyBufferToBuffer(o.ref.slot.buffer!, o.copyOffset, staging[i]!, 0, o.copyBytes);
      });
      for (const [name, t] of Object.entries(copyTo)) {
        const { ref } = this.#outputs.get(name)!;
        if (bytesOf(ref.info) > 0) encoder.copyBufferToBuffer(ref.slot.buffer!, ref.byteOffset, t.buffer, 0, padded(bytesOf(ref.info)));
      }
      gpu.submit([encoder.finish()]);
    });
    const outputs: Record<string, ReadArray> = {};
    await Promise.all(
      wanted.map(async (name, i) => {
        const o = this.#outputs.get(name)!;
        const bytes = await this.#mapRead(staging[i]!, o.copyBytes);
        const shift = o.ref.byteOffset - o.copyOffset;
        outputs[name] = decodeTensorData(bytes, o.ref.info.dtype, sizeOf(o.ref.info.shape), shift);
      }),
    );
    if (!profile) return { outputs };
    const wallMs = performance.now() - started;
    if (!timing) return { outputs, profile: { source: 'wall', totalMs: wallMs, nodes: [] } };
    const stamps = new BigInt64Array(await this.#mapRead(timing.staging, 16 * this.#nodes.length));
    const nodes = this.#nodes.map((n, i) => ({
      label: n.label,
      kernel: n.kernel.name,
      shape: n.outputs.map((r) => shapeString(r.info.shape)).join(' '),
      ms: Math.max(0, Number(stamps[2 * i + 1]! - stamps[2 * i]!)) / 1e6,
      flops: n.plan.flops,
      bytes: n.plan.bytes,
    }));
    const totalMs = Math.max(0, Number(stamps[2 * this.#nodes.length - 1]! - stamps[0]!)) / 1e6;
    return { outputs, profile: { source: 'timestamp', totalMs, nodes } };
  }

  /** The output's staging buffer, made on its first read and owned (and counted) from then on. */
  #staging(name: string): GPUBuffer {
    const o = this.#outputs.get(name)!;
    if (!o.staging) {
      o.staging = this.gpu.createBuffer({ size: o.copyBytes, usage: USAGE.MAP_READ | USAGE.COPY_DST, label: `output ${name}` }, 'graph run');
      this.#buffers.push(o.staging);
      this.memory.ownedBytes += o.copyBytes;
    }
    return o.staging;
  }

  /** A staging buffer's bytes; disposing the plan while a run waits for them rejects that run, saying so. */
  async #mapRead(staging: GPUBuffer, size: number): Promise<ArrayBuffer> {
    try {
      return await this.gpu.mapRead('graph run', staging, size);
    } catch (err) {
      if (this.#disposed && !this.gpu.closed) throw new GpuError('graph run', 'the plan was disposed while this run was in flight', { cause: err });
      throw err;
    }
  }

  /** Frees every buffer the plan owns and releases its constants. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const b of this.#buffers) this.gpu.destroyBuffer(b);
    this.#timing?.querySet.destroy();
    for (const t of this.#constants) releaseConstant(t);
  }
}

/** Compiles a builder's graph for one device. */
export async function compileGraph(gpu: Gpu, graph: GraphBuilder): Promise<GraphPlan> {
  if (graph.outputs.size === 0) throw new GpuError('graph compile', 'the graph has no outputs');
  const align = Math.max(4, gpu.limits.minStorageBufferOffsetAlignment ?? 256);
  const slots: Slot[] = [];
  const refs = new Map<Value, Ref>();
  const nodes: CompiledNode[] = [];
  const inputs = new Map<string, Ref>();
  const constants = new Map<Tensor, Slot>();
  const fills = new Map<string, { slot: Slot; value: number; dtype: TensorInfo['dtype'] }>();
  const newSlot = (kind: Slot['kind'], bytes: number, first: number): Slot => {
    const s: Slot = { kind, bytes: padded(bytes), first, last: first };
    slots.push(s);
    return s;
  };

  const refOf = (v: Value): Ref => {
    let r = refs.get(v);
    if (r) return r;
    const src = v.source;
    if (src.kind === 'input') {
      r = { slot: newSlot('input', bytesOf(v), -1), byteOffset: 0, info: v };
      inputs.set(src.name, r);
    } else if (src.kind === 'constant') {
      let slot = constants.get(src.tensor);
      if (!slot) {
        if (src.tensor.disposed) throw new GpuError('graph compile', `constant ${src.tensor} was disposed`);
        slot = newSlot('constant', src.tensor.byteLength, -1);
        slot.buffer = src.tensor.buffer;
        constants.set(src.tensor, slot);
      }
      r = { slot, byteOffset: 0, info: v };
    } else if (src.kind === 'fill') {
      const key = `${v.dtype}:${src.value}`;
      let fill = fills.get(key);
      if (!fill) fills.set(key, (fill = { slot: newSlot('fill', 0, -1), value: src.value, dtype: v.dtype }));
      fill.slot.bytes = Math.max(fill.slot.bytes, padded(bytesOf(v)));
      r = { slot: fill.slot, byteOffset: 0, info: v };
    } else if (src.kind === 'view') {
      const base = refOf(src.base);
      r = { slot: base.slot, byteOffset: base.byteOffset + src.offset * BYTES_PER_ELEMENT[v.dtype], info: v };
    } else {
      throw new GpuError('graph compile', `${v} is used before the node that makes it`);
    }
    refs.set(v, r);
    return r;
  };

  const addNode = (label: string, kernel: Kernel<unknown>, inputRefs: Ref[], options: unknown, outputInfos: TensorInfo[]): Ref[] => {
    const index = nodes.length;
    const inputInfos = inputRefs.map((r) => r.info);
    const plan = kernel.plan(gpu, inputInfos, outputInfos, options);
    checkBindings(gpu, `graph node ${label}`, kernel.name, plan, [...inputInfos, ...outputInfos, ...(plan.scratch ?? [])], inputInfos.length, outputInfos.length);
    for (const r of inputRefs) r.slot.last = Math.max(r.slot.last, index);
    const outputs = outputInfos.map((info) => ({ slot: newSlot('shared', bytesOf(info), index), byteOffset: 0, info }));
    const scratch = (plan.scratch ?? []).map((info) => ({ slot: newSlot('shared', bytesOf(info), index), byteOffset: 0, info }));
    nodes.push({ label, kernel, inputs: inputRefs, outputs, scratch, plan });
    return outputs;
  };

  // Views whose offset the device cannot bind are copied right before their first use.
  const materialised = new Map<Value, Ref>();
  const bindable = (v: Value): Ref => {
    const r = refOf(v);
    if (r.byteOffset % align === 0) return r;
    let m = materialised.get(v);
    if (!m) {
      const root = v.root();
      const view = { shape: v.shape, strides: contiguousStrides(v.shape), offset: root.offset };
      m = addNode(`copy ${v}`, stridedCopyKernel as Kernel<unknown>, [refOf(root.value)], view, [{ shape: v.shape, dtype: v.dtype }])[0]!;
      materialised.set(v, m);
    }
    return m;
  };

  try {
    for (const node of graph.nodes) {
      const inputRefs = node.inputs.map(bindable);
      const outputs = addNode(node.label, node.kernel, inputRefs, node.options, node.outputs.map((o) => ({ shape: o.shape, dtype: o.dtype })));
      node.outputs.forEach((v, i) => refs.set(v, outputs[i]!));
    }
  } catch (err) {
    if (err instanceof GpuError) throw err;
    throw new GpuError('graph compile', (err as Error).message, { cause: err });
  }
  for (const name of graph.inputs.keys()) refOf(graph.inputs.get(name)!);
  const outputRefs = new Map([...graph.outputs].map(([name, v]) => [name, refOf(v)] as const));
  for (const r of outputRefs.values()) r.slot.last = nodes.length;

  const sharedSlots = slots.filter((s) => s.kind === 'shared');
  const mem = planMemory(sharedSlots);
  // Every pipeline the plan needs, compiled concurrently before anything is allocated.
  await preparePipelines(gpu, nodes.flatMap((n) => n.plan.dispatches.map((d) => d.program)));

  const buffers: GPUBuffer[] = [];
  const make = (size: number, usage: number, label: string) => {
    const b = gpu.createBuffer({ size, usage, label }, 'graph compile');
    buffers.push(b);
    return b;
  };
  try {
    const shared = mem.bufferBytes.map((bytes, i) => make(bytes, USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST, `intermediates ${i}`));
    sharedSlots.forEach((s, i) => (s.buffer = shared[mem.buffer[i]!]));
    for (const [name, r] of inputs) r.slot.buffer = make(r.slot.bytes, USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST, `input ${name}`);
    for (const [key, { slot, value, dtype }] of fills) {
      slot.buffer = make(slot.bytes, USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST, `fill ${key}`);
      const count = slot.bytes / BYTES_PER_ELEMENT[dtype];
      gpu.device.queue.writeBuffer(slot.buffer, 0, encodeTensorData(new Array<number>(count).fill(value), dtype, count, 'graph compile'));
    }
    const { data, offsets } = packUniforms(gpu, nodes.map((n) => n.plan));
    const uniformBuffer = make(data.byteLength, USAGE.UNIFORM | USAGE.COPY_DST, 'graph uniforms');
    gpu.device.queue.writeBuffer(uniformBuffer, 0, data);
    const binding = (r: Ref): GPUBufferBinding => ({ buffer: r.slot.buffer!, offset: r.byteOffset, size: padded(bytesOf(r.info)) });
    const prepared = await scopedWithPipelines(gpu, 'graph compile', nodes.map((n) => n.plan), () =>
      nodes.map((n, i) => createBindGroups(gpu, n.plan, [...n.inputs, ...n.outputs, ...n.scratch].map(binding), uniformBuffer, offsets[i]!)),
    );
    const outputs = new Map(
      [...outputRefs].map(([name, ref]) => {
        // copyBufferToBuffer needs 4-byte alignment: copy the enclosing aligned range.
        const start = ref.byteOffset;
        const copyOffset = Math.floor(start / 4) * 4;
        const copyBytes = padded(start + bytesOf(ref.info) - copyOffset);
        return [name, { ref, copyOffset, copyBytes }] as const;
      }),
    );
    let timing: { querySet: GPUQuerySet; resolve: GPUBuffer; staging: GPUBuffer } | undefined;
    if (gpu.features.has('timestamp-query') && nodes.length > 0) {
      timing = {
        querySet: gpu.device.createQuerySet({ type: 'timestamp', count: 2 * nodes.length }),
        resolve: make(16 * nodes.length, USAGE.QUERY_RESOLVE | USAGE.COPY_SRC, 'timestamps'),
        staging: make(16 * nodes.length, USAGE.MAP_READ | USAGE.COPY_DST, 'timestamps staging'),
      };
    }
    const constantTensors = [...constants.keys()];
    for (const t of constantTensors) retainConstant(t);
    const inputBytes = [...inputs.values()].reduce((s, r) => s + r.slot.bytes, 0);
    const constantBytes = constantTensors.reduce((s, t) => s + t.byteLength, 0);
    const fillBytes = [...fills.values()].reduce((s, f) => s + f.slot.bytes, 0);
    return new GraphPlan(gpu, {
      nodes,
      prepared,
      inputs,
      outputs,
      buffers,
      constants: constantTensors,
      graph,
      timing,
      memory: { intermediateBytes: mem.totalBytes, intermediateBuffers: mem.bufferBytes.length, unsharedBytes: mem.unsharedBytes, largestBytes: mem.largestBytes, inputBytes, constantBytes, fillBytes, ownedBytes: buffers.reduce((sum, b) => sum + b.size, 0) },
    });
  } catch (err) {
    for (const b of buffers) gpu.destroyBuffer(b);
    throw err;
  }
}

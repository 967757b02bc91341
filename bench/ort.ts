// ONNX Runtime (onnxruntime-node, a dev dependency) as peer columns, running the identical graph:
// each case's node (or a model's graph) is exported with exportOnnx and run by ORT's native WebGPU
// execution provider (Dawn inside ORT, on the same adapter, its own device) or its CPU provider,
// and by onnxruntime-web's WebGPU EP on our own GPUDevice.
//
// How a peer is timed: one session per case, a warm-up run, then n `session.run` calls awaited one
// after another (timeLoop). Input 0 is fed from the host on every run and the outputs come back to
// the host (ORT-node has no device-resident I/O here), so each call includes that upload and
// readback; every other input of a kernel case is an initializer, uploaded once like weights.
import type { Gpu } from '../src/gpu/gpu.js';
import { Tensor } from '../src/tensor.js';
import { GraphBuilder } from '../src/graph/builder.js';
import { exportOnnx } from '../src/onnx/export.js';
import { firstLine, timeLoop, type PeerTime, type Timing, type TimingSettings } from './harness.js';
import type { KernelBenchCase } from './types.js';

/** The ORT peers `--peers` can name. */
export const ORT_PEERS = ['ort-webgpu', 'ort-cpu', 'ort-web'] as const;
export type OrtPeerName = (typeof ORT_PEERS)[number];

export interface OrtFeed {
  data: ArrayLike<number>;
  shape: readonly number[];
  dtype: string;
}

export interface OrtPeer {
  name: OrtPeerName;
  /** e.g. 'ONNX Runtime 1.30.0 (onnxruntime-node, WebGPU EP)'. */
  description: string;
  /** Wall time per `session.run` of the ONNX model with these feeds. */
  timeModel(bytes: Uint8Array, feeds: Record<string, OrtFeed>, settings: TimingSettings): Promise<Timing>;
}

/** What onnxruntime-node and onnxruntime-web have in common that the timing needs. */
interface OrtApi {
  Tensor: new (type: 'float32' | 'int32' | 'uint32', data: Float32Array | Int32Array | Uint32Array, dims: number[]) => unknown;
  InferenceSession: {
    create(bytes: Uint8Array, options: Record<string, unknown>): Promise<{ run(feeds: Record<string, unknown>): Promise<unknown>; release(): Promise<void> }>;
  };
  env: { versions?: { common?: string }; webgpu?: { device?: unknown }; wasm?: { numThreads?: number } };
}

const ORT_TYPE: Record<string, 'float32' | 'int32' | 'uint32'> = { f32: 'float32', i32: 'int32', u32: 'uint32' };

/**
 * Loads the runtime `name` asks for: onnxruntime-node with its native WebGPU or CPU provider, or
 * onnxruntime-web's WebGPU EP (wasm + WebGPU) on `gpu`'s own GPUDevice.
 */
export async function loadOrt(name: OrtPeerName, gpu: Gpu): Promise<OrtPeer> {
  if (name === 'ort-web') return loadOrtWeb(gpu);
  const ort = (await import('onnxruntime-node')) as unknown as OrtApi & { listSupportedBackends?: () => { name: string }[] };
  const provider = name === 'ort-webgpu' ? 'webgpu' : 'cpu';
  const backends = ort.listSupportedBackends?.() ?? [];
  if (!backends.some((b) => b.name === provider)) throw new Error(`onnxruntime-node offers no '${provider}' execution provider here`);
  const description = `ONNX Runtime ${ort.env.versions?.common ?? ''} (onnxruntime-node, ${provider === 'webgpu' ? 'native WebGPU EP' : 'CPU EP'})`;
  // Severity 3: errors only (ORT warns on stderr that it keeps shape ops on the CPU).
  return ortPeer(name, description, ort, { executionProviders: [provider], graphOptimizationLevel: 'all', logSeverityLevel: 3 });
}

async function loadOrtWeb(gpu: Gpu): Promise<OrtPeer> {
  const ort = (await import('onnxruntime-web/webgpu')) as unknown as OrtApi;
  // ORT-web binds to one device for the life of the process.
  if (ort.env.webgpu!.device === gpu.device) return webPeer(ort);
  if (ort.env.webgpu!.device) throw new Error('onnxruntime-web is already bound to another GPUDevice in this process');
  // ORT-web writes from its wasm heap, a SharedArrayBuffer, which browsers accept in
  // queue.writeBuffer and Node's Dawn refuses ("Invalid argument"): such views are copied first.
  const queue = Object.getPrototypeOf(gpu.device.queue) as GPUQueue;
  const writeBuffer = queue.writeBuffer;
  queue.writeBuffer = function (this: GPUQueue, buffer, offset, data, ...rest) {
    const view = ArrayBuffer.isView(data) && data.buffer instanceof SharedArrayBuffer ? (data as Uint8Array).slice() : data;
    return writeBuffer.call(this, buffer, offset, view, ...rest);
  } as GPUQueue['writeBuffer'];
  ort.env.webgpu!.device = gpu.device;
  // ORT-web looks for navigator.gpu before it takes the device given; Node 20 has no navigator.
  const nav = ((globalThis as { navigator?: { gpu?: unknown } }).navigator ??= {} as { gpu?: unknown });
  nav.gpu ??= (await import('webgpu')).create([]);
  // One wasm thread: its worker pool needs a browser's module workers (the kernels run on the GPU).
  ort.env.wasm!.numThreads = 1;
  return webPeer(ort);
}

function webPeer(ort: OrtApi): OrtPeer {
  const description = `ONNX Runtime Web ${ort.env.versions?.common ?? ''} (onnxruntime-web, WebGPU EP, wasm) on the same GPUDevice, one wasm thread; SharedArrayBuffer uploads copied for Node's Dawn`;
  return ortPeer('ort-web', description, ort, { executionProviders: ['webgpu'], graphOptimizationLevel: 'all', logSeverityLevel: 3 });
}

function ortPeer(name: OrtPeerName, description: string, ort: OrtApi, sessionOptions: Record<string, unknown>): OrtPeer {
  return {
    name,
    description,
    async timeModel(bytes, feeds, settings) {
      const session = await ort.InferenceSession.create(bytes, sessionOptions);
      try {
        const inputs = Object.fromEntries(
          Object.entries(feeds).map(([k, f]) => {
            const type = ORT_TYPE[f.dtype];
            if (!type) throw new Error(`input ${k}: dtype ${f.dtype} is not fed to ORT here`);
            const data = type === 'float32' ? Float32Array.from(f.data) : type === 'int32' ? Int32Array.from(f.data) : Uint32Array.from(f.data);
            return [k, new ort.Tensor(type, data, [...f.shape])];
          }),
        );
        return await timeLoop(async (n) => {
          for (let i = 0; i < n; i++) await session.run(inputs);
        }, settings);
      } finally {
        await session.release();
      }
    },
  };
}

/**
 * The case's kernel as a one-node graph (input 0 a graph input, the others constants) in ONNX,
 * and its feed. Fails, naming the node, for kernels without an ONNX form.
 */
export async function exportCase(gpu: Gpu, c: KernelBenchCase, data: readonly ArrayLike<number>[]): Promise<{ bytes: Uint8Array; feeds: Record<string, OrtFeed> }> {
  const constants: Tensor[] = [];
  try {
    const g = new GraphBuilder();
    const inputs = c.inputs.map((input, i) => {
      const dtype = input.dtype ?? 'f32';
      if (i === 0) return g.input('x', input.shape, dtype);
      const t = Tensor.from(gpu, data[i]!, input.shape, dtype);
      constants.push(t);
      return g.constant(t);
    });
    g.op(c.kernel, inputs, c.options, c.kernel.name).forEach((v, i) => g.output(`y${i}`, v));
    const bytes = await exportOnnx(g, { dynamicBatch: false, gpu });
    return { bytes, feeds: c.inputs.length ? { x: { data: data[0]!, shape: c.inputs[0]!.shape, dtype: c.inputs[0]!.dtype ?? 'f32' } } : {} };
  } finally {
    for (const t of constants) t.dispose();
  }
}

/**
 * Exports once (`exported`), then times the model on every peer: each peer's ms and ours/its ratio
 * (`wallMs` is ours), or why it has none (an export failure names the node for every peer).
 */
export async function timeOnPeers(
  peers: readonly OrtPeer[],
  exported: () => Promise<{ bytes: Uint8Array; feeds: Record<string, OrtFeed> }>,
  wallMs: number,
  settings: TimingSettings,
  log?: (line: string) => void,
): Promise<Record<string, PeerTime>> {
  const out: Record<string, PeerTime> = {};
  let model: Awaited<ReturnType<typeof exported>>;
  try {
    model = await exported();
  } catch (err) {
    for (const p of peers) out[p.name] = { error: firstLine(err) };
    return out;
  }
  for (const p of peers) {
    try {
      const t = await p.timeModel(model.bytes, model.feeds, settings);
      out[p.name] = { ms: t.wallMs, ratio: wallMs / t.wallMs };
      log?.(`  ${p.name}: ${t.wallMs.toFixed(1)} ms, ours/${p.name} ${(wallMs / t.wallMs).toFixed(3)}`);
    } catch (err) {
      out[p.name] = { error: firstLine(err) };
    }
  }
  return out;
}

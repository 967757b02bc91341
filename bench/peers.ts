// TF.js's WebGPU backend as the peer column, run in this process on our own GPUDevice (same
// adapter, same limits, same queue), so the comparison is between kernels and nothing else.
//
// How a peer is timed: its inputs are uploaded once (tf.tensor, then a warm-up call), then n calls
// of the case's function are issued back to back (intermediates and result disposed), then
// one fence: TF.js's pending command encoder is submitted and we wait for the shared queue. The
// time per call is that wall time / n, as for our kernels' wall time (n dispatches, one submit,
// one wait). Nothing is read back, so neither side pays for a readback. A peer may return a
// Promise (TF.js's async ops, e.g. nonMaxSuppressionAsync): it is awaited, so whatever readback
// that op does is part of its time.
import type { Gpu } from '../src/gpu/gpu.js';
import type { DType } from '../src/dtype.js';
import { timeLoop, type Timing, type TimingSettings } from './harness.js';
import type { TfjsPeer as TfjsPeerFn } from './types.js';

export interface PeerInput {
  data: ArrayLike<number>;
  shape: number[];
  dtype: DType;
}

export interface TfjsPeer {
  /** @tensorflow/tfjs-core's version. */
  version: string;
  /** Wall time per call of `fn(tf, inputs)`, n calls then one fence. */
  time(fn: TfjsPeerFn, inputs: PeerInput[], settings: TimingSettings): Promise<Timing>;
  /** One call's outputs read back (a tensor or a list of them), to check the peer computes what we do. */
  values(fn: TfjsPeerFn, inputs: PeerInput[]): Promise<Float32Array[]>;
}

/** TF.js's WebGPUBackend refuses to start unless navigator.gpu exists, even when handed a device. */
async function ensureNavigatorGpu(): Promise<void> {
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (g.navigator?.gpu) return;
  const { create } = await import('webgpu');
  // A real entry point rather than a stub, so TF.js's own adapter request would work too; the
  // global keeps it referenced (Dawn aborts if it is collected while in use).
  const gpu = create([]);
  if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  else g.navigator = { gpu };
}

/**
 * Loads TF.js (tfjs-core + tfjs-backend-webgpu, dev dependencies) and makes its 'webgpu' backend
 * one built on `gpu.device`. Throws if the packages are missing.
 */
export async function loadTfjs(gpu: Gpu): Promise<TfjsPeer> {
  await ensureNavigatorGpu();
  const tf = await import('@tensorflow/tfjs-core');
  // tfjs-core's Node bundle registers no gradient functions (the @tensorflow/tfjs union package
  // does); tf.grads (the grad suite's peer) needs them. Its ESM sources, imported by file path so
  // that the bench's esbuild bundle includes them (Node cannot resolve their extensionless imports),
  // register into tfjs's global registry, which every copy of tfjs-core shares.
  await import('../node_modules/@tensorflow/tfjs-core/dist/register_all_gradients.js');
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  // Importing the backend registered a factory that would open its own device: replace it.
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  const backend = new WebGPUBackend(gpu.device, gpu.info as unknown as GPUAdapterInfo);
  tf.registerBackend('webgpu', () => backend);
  if (!(await tf.setBackend('webgpu'))) throw new Error('TF.js could not start its webgpu backend on our device');
  // Small inputs would otherwise run on TF.js's CPU kernels; the peer column is about the GPU.
  tf.env().set('WEBGPU_CPU_FORWARD', false);

  const fence = async () => {
    backend.ensureCommandEncoderReady();
    backend.endComputePassEncoder();
    backend.submitQueue();
    await gpu.settle(gpu.device.queue.onSubmittedWorkDone());
  };

  const upload = (inputs: PeerInput[]) =>
    inputs.map((i) => {
      const int = i.dtype === 'i32' || i.dtype === 'u32';
      // TF.js has no f16 tensors: f16 cases run their peer in f32.
      return tf.tensor(int ? Int32Array.from(i.data) : Float32Array.from(i.data), i.shape, int ? 'int32' : 'float32');
    });

  // TF.js's failed dispatches (e.g. a buffer past the binding limit) are uncaptured WebGPU errors
  // and would time as nothing at all: its calls run inside error scopes, and an error fails the cell.
  // Nothing else uses the device meanwhile, so the scopes catch only the peer's own errors.
  const checked = async <T>(work: () => Promise<T>): Promise<T> => {
    gpu.device.pushErrorScope('out-of-memory');
    gpu.device.pushErrorScope('validation');
    let result: T | undefined;
    let thrown: unknown;
    try {
      result = await work();
    } catch (err) {
      thrown = err;
    }
    const [validation, oom] = await Promise.all([gpu.device.popErrorScope(), gpu.device.popErrorScope()]);
    if (thrown !== undefined) throw thrown;
    const err = validation ?? oom;
    if (err) throw new Error(`TF.js: ${oom && !validation ? 'out of GPU memory' : 'WebGPU validation error'}: ${err.message.trim()}`);
    return result!;
  };

  return {
    version: tf.version_core,
    values: (fn, inputs) => checked(async () => {
      const xs = upload(inputs);
      tf.engine().startScope();
      try {
        const out = await fn(tf, xs);
        return await Promise.all((Array.isArray(out) ? out : [out]).map(async (t) => Float32Array.from(await t.data())));
      } finally {
        tf.engine().endScope();
        tf.dispose(xs);
      }
    }),
    time: (fn, inputs, settings) => checked(async () => {
      const xs = upload(inputs);
      try {
        return await timeLoop(async (n) => {
          for (let i = 0; i < n; i++) {
            // A scope rather than tf.tidy, which refuses async functions.
            tf.engine().startScope();
            try {
              tf.dispose(await fn(tf, xs));
            } finally {
              tf.engine().endScope();
            }
          }
          await fence();
        }, settings);
      } finally {
        tf.dispose(xs);
      }
    }),
  };
}

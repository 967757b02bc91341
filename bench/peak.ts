// Measured peak rates of the adapter, the denominators of the "% of peak" column: f32 FMA
// throughput (bench/peak.wgsl fma_peak) and copy bandwidth, the best of compute-shader copies
// (copy_peak, 1, 4 or 16 vec4s per invocation) and copyBufferToBuffer. Measured, not taken from a spec sheet, so that software
// adapters (lavapipe) and throttled laptops get a meaningful fraction too.
import type { Gpu } from '../src/gpu/gpu.js';
import { Tensor } from '../src/tensor.js';
import { grid1d, uniforms, type KernelPlan, type Program } from '../src/kernels/program.js';
import { bindPlan, dispatchRecorder, timeGpu, type Recorder, type TimingSettings } from './harness.js';
import peakWgsl from './peak.wgsl';

export interface Peak {
  /** f32 FMA throughput in GFLOP/s (an FMA counts as 2 flops). */
  gflops: number;
  /** Copy bandwidth in GB/s (bytes read + bytes written): the better of the two below. */
  gbps: number;
  shaderCopyGbps: number;
  bufferCopyGbps: number;
  source: 'timestamp' | 'wall';
  /** Measured again after a suite's rows, each rate the better of the two (remeasurePeak). */
  remeasured?: true;
}

export interface PeakSizes {
  /** Workgroups of 256 invocations for the FMA test (enough to fill a large GPU). */
  fmaWorkgroups: number;
  /** FMA loop trips per invocation; each trip is 8 vec4 FMAs. */
  fmaIterations: number;
  /** Bytes copied per repetition (source and destination each), well above last-level caches. */
  copyBytes: number;
}

export const PEAK_FULL: PeakSizes = { fmaWorkgroups: 1024, fmaIterations: 256, copyBytes: 256 << 20 };
export const PEAK_QUICK: PeakSizes = { fmaWorkgroups: 64, fmaIterations: 16, copyBytes: 4 << 20 };

const WG = 256;

/** vec4s per invocation tried for the shader copy: one suits GPUs, several suit CPU adapters (lavapipe). */
const COPY_PER = [1, 4, 16];

function program(entryPoint: string, per = 1): Program {
  return { name: `bench.${entryPoint}`, key: '', code: peakWgsl, entryPoint, constants: { WG, PER: per }, bindings: ['read', 'write'] };
}

async function timePlan(gpu: Gpu, plan: KernelPlan, tensors: Tensor[], label: string, settings: TimingSettings) {
  const { prepared, uniformBuffer } = bindPlan(gpu, plan, tensors, label);
  try {
    return await timeGpu(gpu, label, dispatchRecorder(prepared), settings);
  } finally {
    gpu.destroyBuffer(uniformBuffer);
  }
}

/**
 * Measures the peaks again and keeps, rate by rate, the better of these and those measured before
 * (cached on the Gpu). A software adapter's host may run at different speeds minutes apart (a VM
 * whose cores are shared): a peak measured only while it was slow would flatter every row after it.
 */
export async function remeasurePeak(gpu: Gpu, settings: TimingSettings, sizes: PeakSizes = PEAK_FULL): Promise<Peak> {
  const before = await measurePeak(gpu, settings, sizes);
  const now = await measure(gpu, settings, sizes);
  const best: Peak = {
    gflops: Math.max(before.gflops, now.gflops),
    gbps: Math.max(before.gbps, now.gbps),
    shaderCopyGbps: Math.max(before.shaderCopyGbps, now.shaderCopyGbps),
    bufferCopyGbps: Math.max(before.bufferCopyGbps, now.bufferCopyGbps),
    source: now.source,
    remeasured: true,
  };
  gpu.cache<Promise<Peak>>('bench.peak').set(JSON.stringify(sizes), Promise.resolve(best));
  return best;
}

/** Measures (once per Gpu and sizes; cached on the Gpu) the adapter's peak FMA rate and copy bandwidth. */
export async function measurePeak(gpu: Gpu, settings: TimingSettings, sizes: PeakSizes = PEAK_FULL): Promise<Peak> {
  const cache = gpu.cache<Promise<Peak>>('bench.peak');
  const key = JSON.stringify(sizes);
  let peak = cache.get(key);
  if (!peak) {
    peak = measure(gpu, settings, sizes);
    cache.set(key, peak);
    peak.catch(() => cache.delete(key));
  }
  return peak;
}

async function measure(gpu: Gpu, settings: TimingSettings, sizes: PeakSizes): Promise<Peak> {
  const limit = Math.min(gpu.limits.maxStorageBufferBindingSize ?? Infinity, gpu.limits.maxBufferSize ?? Infinity);
  const copyBytes = Math.floor(Math.min(sizes.copyBytes, limit) / 16) * 16;
  const vec4s = copyBytes / 16;
  const fmaInvocations = sizes.fmaWorkgroups * WG;
  const tensors: Tensor[] = [];
  try {
    const src = Tensor.empty(gpu, [vec4s * 4]);
    tensors.push(src);
    const dst = Tensor.empty(gpu, [Math.max(vec4s, fmaInvocations) * 4]);
    tensors.push(dst);

    const fmaFlops = fmaInvocations * sizes.fmaIterations * 8 * 4 * 2;
    const fma = await timePlan(
      gpu,
      {
        dispatches: [{ program: program('fma_peak'), tensors: [0, 1], uniforms: uniforms(sizes.fmaIterations, 0, { f32: 0.999 }, { f32: 1e-3 }), workgroups: grid1d(gpu, fmaInvocations, WG) }],
      },
      [src, dst],
      'bench.fma_peak',
      settings,
    );
    let shaderCopyMs = Infinity;
    for (const per of COPY_PER) {
      const copy = await timePlan(
        gpu,
        { dispatches: [{ program: program('copy_peak', per), tensors: [0, 1], uniforms: uniforms(0, vec4s, { f32: 0 }, { f32: 0 }), workgroups: grid1d(gpu, Math.ceil(vec4s / per), WG) }] },
        [src, dst],
        'bench.copy_peak',
        settings,
      );
      shaderCopyMs = Math.min(shaderCopyMs, copy.ms);
    }
    // copyBufferToBuffer cannot sit in a compute pass: empty passes before and after carry the timestamps.
    const bufferCopy: Recorder = (encoder, n, tw) => {
      if (tw) encoder.beginComputePass({ timestampWrites: { querySet: tw.querySet, beginningOfPassWriteIndex: tw.beginningOfPassWriteIndex } }).end();
      for (let i = 0; i < n; i++) encoder.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, copyBytes);
      if (tw) encoder.beginComputePass({ timestampWrites: { querySet: tw.querySet, endOfPassWriteIndex: tw.endOfPassWriteIndex } }).end();
    };
    const copied = await timeGpu(gpu, 'bench.copyBufferToBuffer', bufferCopy, settings);

    const shaderCopyGbps = (2 * copyBytes) / (shaderCopyMs * 1e6);
    const bufferCopyGbps = (2 * copyBytes) / (copied.ms * 1e6);
    return {
      gflops: fmaFlops / (fma.ms * 1e6),
      gbps: Math.max(shaderCopyGbps, bufferCopyGbps),
      shaderCopyGbps,
      bufferCopyGbps,
      source: fma.source,
    };
  } finally {
    for (const t of tensors) t.dispose();
  }
}

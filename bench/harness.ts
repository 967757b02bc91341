// Timing for benchmarks. Every measurement is "n repetitions, then one fence", repeated until it
// takes about `minSeconds`, and the median of a few trials is reported per repetition:
// - our kernels: the plan is computed once, bind groups are prebuilt, and n repetitions of the
//   dispatches are recorded into one compute pass and one submit. GPU time comes from timestamp
//   queries around that pass when the device has them; wall time (encode + submit + wait) always.
// - TF.js peers (bench/peers.ts): n calls, then one fence on the shared queue.
// - whole pipelines (graph runs, model forwards): `timeAsync`, one awaited call per repetition.
import type { Gpu } from '../src/gpu/gpu.js';
import { Tensor } from '../src/tensor.js';
import { sizeOf, shapeString } from '../src/dtype.js';
import { createBindGroups, encodeDispatches, packUniforms } from '../src/kernels/runtime.js';
import type { KernelPlan, TensorInfo } from '../src/kernels/program.js';
import { randomArray } from '../test/util/random.js';
import type { KernelBenchCase } from './types.js';
import type { Peak } from './peak.js';
import type { TfjsPeer } from './peers.js';
import { exportCase, timeOnPeers, type OrtPeer } from './ort.js';

export interface TimingSettings {
  /** Each trial runs enough repetitions to take about this long. */
  minSeconds: number;
  /** Trials after calibration; the median is reported. */
  trials: number;
  /** Untimed runs first (pipeline compilation, first-use uploads, caches). */
  warmup: number;
  /** Most repetitions per trial (bounds encoding time and memory for very fast work). */
  maxReps: number;
}

/** Settings for numbers worth reading: trials of ~0.3 s (lavapipe runs a CLIP-size matmul in ~0.1 s). */
export const FULL: TimingSettings = { minSeconds: 0.3, trials: 3, warmup: 1, maxReps: 10_000 };
/** Settings for smoke runs (CI): everything runs, nothing is worth comparing. */
export const QUICK: TimingSettings = { minSeconds: 0.01, trials: 1, warmup: 1, maxReps: 20 };

export interface Timing {
  /** Milliseconds per repetition: the median trial, from timestamps when the run returned them, else wall time. */
  ms: number;
  /** Wall-clock milliseconds per repetition (median trial), fence included. */
  wallMs: number;
  source: 'timestamp' | 'wall';
  /** Repetitions per trial. */
  reps: number;
  trials: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * Times `run(n)`, which does n repetitions and resolves when they are finished. If it resolves to a
 * number, that is its own measurement of the n repetitions in ms (GPU time) and is reported as `ms`.
 * Calibration grows n until one run takes at least half of `minSeconds`.
 */
export async function timeLoop(run: (n: number) => Promise<number | void>, settings: TimingSettings): Promise<Timing> {
  for (let i = 0; i < settings.warmup; i++) await run(1);
  const target = settings.minSeconds * 1000;
  let n = 1;
  for (;;) {
    const t0 = performance.now();
    await run(n);
    const wall = performance.now() - t0;
    if (wall >= target / 2 || n >= settings.maxReps) break;
    n = Math.min(settings.maxReps, Math.max(2 * n, Math.ceil((n * target) / Math.max(wall, 1e-3))));
  }
  const measured: number[] = [];
  const walls: number[] = [];
  for (let t = 0; t < settings.trials; t++) {
    const t0 = performance.now();
    const own = await run(n);
    walls.push((performance.now() - t0) / n);
    if (typeof own === 'number') measured.push(own / n);
  }
  const wallMs = median(walls);
  const timestamped = measured.length === walls.length;
  return { ms: timestamped ? median(measured) : wallMs, wallMs, source: timestamped ? 'timestamp' : 'wall', reps: n, trials: settings.trials };
}

/**
 * Wall time per call of an async function (graph runs, model forwards): each call is awaited,
 * so whatever fence the function ends with (a readback, usually) is part of its time.
 */
export async function timeAsync(fn: () => unknown, options: Partial<TimingSettings> = {}): Promise<Timing> {
  return timeLoop(
    async (n) => {
      for (let i = 0; i < n; i++) await fn();
    },
    { ...FULL, ...options },
  );
}

/**
 * Records n repetitions of some GPU work into `encoder`. `timestampWrites`, when given, must
 * bracket all n repetitions (the beginning of the first pass, the end of the last).
 */
export type Recorder = (encoder: GPUCommandEncoder, n: number, timestampWrites?: GPUComputePassTimestampWrites) => void;

/** n repetitions of prebuilt dispatches in one compute pass. */
export function dispatchRecorder(prepared: Parameters<typeof encodeDispatches>[1]): Recorder {
  return (encoder, n, timestampWrites) => {
    const pass = encoder.beginComputePass({ label: 'bench', timestampWrites });
    for (let i = 0; i < n; i++) encodeDispatches(pass, prepared);
    pass.end();
  };
}

const USAGE = { MAP_READ: 0x01, COPY_SRC: 0x04, COPY_DST: 0x08, UNIFORM: 0x40, QUERY_RESOLVE: 0x200 } as const;

/**
 * Times recorded GPU work: timestamp queries around the n repetitions when the device has them
 * (reported as `ms`), and wall time from encoding to `onSubmittedWorkDone` (or the timestamp
 * readback) in any case. Validation errors of the first run are thrown naming `label`.
 */
export async function timeGpu(gpu: Gpu, label: string, record: Recorder, settings: TimingSettings): Promise<Timing> {
  const device = gpu.device;
  const timed = gpu.features.has('timestamp-query');
  const querySet = timed ? device.createQuerySet({ type: 'timestamp', count: 2 }) : undefined;
  const resolve = timed ? gpu.createBuffer({ size: 16, usage: USAGE.QUERY_RESOLVE | USAGE.COPY_SRC }, label) : undefined;
  const staging = timed ? gpu.createBuffer({ size: 16, usage: USAGE.MAP_READ | USAGE.COPY_DST }, label) : undefined;
  const run = async (n: number): Promise<number | void> => {
    const encoder = device.createCommandEncoder({ label });
    if (!querySet) {
      record(encoder, n);
      gpu.submit([encoder.finish()]);
      await gpu.settle(device.queue.onSubmittedWorkDone());
      return;
    }
    record(encoder, n, { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 });
    encoder.resolveQuerySet(querySet, 0, 2, resolve!, 0);
    encoder.copyBufferToBuffer(resolve!, 0, staging!, 0, 16);
    gpu.submit([encoder.finish()]);
    await gpu.settle(staging!.mapAsync(USAGE.MAP_READ));
    const [begin, end] = new BigInt64Array(staging!.getMappedRange().slice(0));
    staging!.unmap();
    return Number(end! - begin!) / 1e6;
  };
  try {
    // The first run's encoding and submit inside an error scope, so a broken plan fails here with its name.
    let first: Promise<unknown> | undefined;
    try {
      await gpu.scoped(label, () => void (first = run(1)));
    } catch (err) {
      await first?.catch(() => undefined);
      throw err;
    }
    await first;
    return await timeLoop(run, { ...settings, warmup: Math.max(0, settings.warmup - 1) });
  } finally {
    querySet?.destroy();
    if (resolve) gpu.destroyBuffer(resolve);
    if (staging) gpu.destroyBuffer(staging);
  }
}

/**
 * A plan's dispatches ready to record: uniforms packed into one buffer (the caller destroys it with
 * gpu.destroyBuffer) and bind groups built over `tensors` ([...inputs, ...outputs, ...scratch]).
 */
export function bindPlan(gpu: Gpu, plan: KernelPlan, tensors: readonly Tensor[], label: string) {
  const { data, offsets } = packUniforms(gpu, [plan]);
  const uniformBuffer = gpu.createBuffer({ size: data.byteLength, usage: USAGE.UNIFORM | USAGE.COPY_DST }, label);
  gpu.device.queue.writeBuffer(uniformBuffer, 0, data);
  try {
    const prepared = createBindGroups(gpu, plan, tensors.map((t) => ({ buffer: t.buffer })), uniformBuffer, offsets[0]!);
    return { prepared, uniformBuffer };
  } catch (err) {
    gpu.destroyBuffer(uniformBuffer);
    throw err;
  }
}

/** Whether a row '<kernel> <label>' passes --filter: case-insensitive substrings, several separated by '|'. */
export function matches(filter: string | undefined, kernel: string, label: string): boolean {
  const text = `${kernel} ${label}`.toLowerCase();
  return !filter || filter.toLowerCase().split('|').some((part) => text.includes(part));
}

/** One row of a kernel benchmark, as written to bench/results/*.json. */
export interface BenchRow {
  kernel: string;
  label: string;
  /** Output shapes, e.g. '[400, 3072]'. */
  shape: string;
  /** Per run: GPU time (timestamps) or wall time, see `source`. */
  ms: number;
  source: 'timestamp' | 'wall';
  /** Wall time per run with n runs in one submit: what the ours/peer ratio compares. */
  wallMs: number;
  reps: number;
  gflops?: number;
  gbps?: number;
  /** The larger of flops/peak FMA rate and bytes/peak bandwidth, with which one it is. */
  peak?: { fraction: number; of: 'fma' | 'bandwidth' };
  /** TF.js wall ms per call (n calls, one fence), when the case has a peer. */
  peerMs?: number;
  /** wallMs / peerMs: below 1 we are faster. */
  ratio?: number;
  /** Why a row or its peer has no number. */
  error?: string;
  peerError?: string;
  /** Other peers by name ('ort-webgpu', 'ort-cpu'): wall ms per call, wallMs / ms, or why not. */
  peers?: Record<string, PeerTime>;
  /** ISO date of the run that measured this row, when it differs from its section's (rows kept by a filtered run). */
  date?: string;
}

export interface PeerTime {
  ms?: number;
  ratio?: number;
  error?: string;
}

/** An error's first line, for a row's error cell. */
export const firstLine = (err: unknown) => String((err as Error)?.message ?? err).split('\n')[0]!;

/** A row's % of peak from its rates: the larger of GFLOP/s ÷ FMA peak and GB/s ÷ copy peak. */
export function peakFraction(gflops: number | undefined, gbps: number | undefined, peak: Peak | undefined): BenchRow['peak'] {
  if (!peak) return undefined;
  const fma = gflops ? gflops / peak.gflops : 0;
  const bw = gbps ? gbps / peak.gbps : 0;
  if (!fma && !bw) return undefined;
  return fma >= bw ? { fraction: fma, of: 'fma' } : { fraction: bw, of: 'bandwidth' };
}

/** The data a bench input gets: the case's own, or seeded uniform [-1, 1) for float inputs. */
export function inputData(c: KernelBenchCase, index: number): ArrayLike<number> {
  const input = c.inputs[index]!;
  if (input.data) return input.data;
  const dtype = input.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') {
    throw new Error(`bench case ${c.kernel.name} '${c.label}': ${dtype} input ${index} needs explicit data (random floats are no valid ${dtype})`);
  }
  return randomArray(sizeOf(input.shape), 1000 + index);
}

export interface CaseContext {
  settings: TimingSettings;
  peak?: Peak;
  tfjs?: TfjsPeer;
  /** ONNX Runtime peers: the case's node exported with exportOnnx (bench/ort.ts). */
  ort?: readonly OrtPeer[];
}

/**
 * Benchmarks one kernel case: our kernel, then its TF.js peer when there is one and peers are
 * loaded. Everything it allocates is freed before it returns, also on failure.
 */
export async function benchKernelCase(gpu: Gpu, c: KernelBenchCase, ctx: CaseContext): Promise<BenchRow> {
  const infos: TensorInfo[] = c.inputs.map((i) => ({ shape: i.shape, dtype: i.dtype ?? 'f32' }));
  const outputs = c.kernel.outputs(infos, c.options);
  const plan = c.kernel.plan(gpu, infos, outputs, c.options);
  const data = c.inputs.map((_, i) => inputData(c, i));
  const tensors: Tensor[] = [];
  let uniformBuffer: GPUBuffer | undefined;
  let timing: Timing;
  try {
    infos.forEach((info, i) => tensors.push(Tensor.from(gpu, data[i]!, info.shape, info.dtype)));
    for (const o of [...outputs, ...(plan.scratch ?? [])]) tensors.push(Tensor.empty(gpu, o.shape, o.dtype));
    const bound = bindPlan(gpu, plan, tensors, c.kernel.name);
    uniformBuffer = bound.uniformBuffer;
    timing = await timeGpu(gpu, `${c.kernel.name} ${c.label}`, dispatchRecorder(bound.prepared), ctx.settings);
  } finally {
    for (const t of tensors) t.dispose();
    if (uniformBuffer) gpu.destroyBuffer(uniformBuffer);
  }
  const gflops = plan.flops ? plan.flops / (timing.ms * 1e6) : undefined;
  const gbps = plan.bytes ? plan.bytes / (timing.ms * 1e6) : undefined;
  const row: BenchRow = {
    kernel: c.kernel.name,
    label: c.label,
    shape: outputs.map((o) => shapeString(o.shape)).join(' '),
    ms: timing.ms,
    source: timing.source,
    wallMs: timing.wallMs,
    reps: timing.reps,
    gflops,
    gbps,
    peak: peakFraction(gflops, gbps, ctx.peak),
  };
  if (c.tfjs && ctx.tfjs) {
    try {
      const peer = await ctx.tfjs.time(c.tfjs, c.inputs.map((input, i) => ({ data: data[i]!, shape: input.shape, dtype: input.dtype ?? 'f32' })), ctx.settings);
      row.peerMs = peer.wallMs;
      row.ratio = timing.wallMs / peer.wallMs;
    } catch (err) {
      row.peerError = firstLine(err);
    }
  }
  if (ctx.ort?.length) row.peers = await timeOnPeers(ctx.ort, () => exportCase(gpu, c, data), timing.wallMs, ctx.settings);
  return row;
}

/** A one-line summary of a row, for progress output. */
export function describeRow(row: BenchRow): string {
  if (row.error) return `${row.kernel} | ${row.label} | FAILED: ${row.error}`;
  const f = (x: number) => x.toPrecision(3);
  const parts = [`${row.kernel} | ${row.label} | ${f(row.ms)} ms (${row.source}; wall ${f(row.wallMs)} ms; ${row.reps} reps)`];
  if (row.gflops !== undefined) parts.push(`${f(row.gflops)} GFLOP/s`);
  if (row.gbps !== undefined) parts.push(`${f(row.gbps)} GB/s`);
  if (row.peak) parts.push(`${(row.peak.fraction * 100).toFixed(1)}% of ${row.peak.of} peak`);
  if (row.peerMs !== undefined) parts.push(`TF.js ${f(row.peerMs)} ms, ours/TF.js ${f(row.ratio!)}`);
  if (row.peerError) parts.push(`TF.js failed: ${row.peerError}`);
  for (const [name, p] of Object.entries(row.peers ?? {})) parts.push(p.ms !== undefined ? `${name} ${f(p.ms)} ms, ours/${name} ${f(p.ratio!)}` : `${name} failed: ${p.error}`);
  return parts.join(' | ');
}

/**
 * Runs kernel cases one after another. A case that throws becomes a row with `error`, so one
 * broken kernel does not hide the others' numbers.
 */
export async function runCases(gpu: Gpu, cases: readonly KernelBenchCase[], ctx: CaseContext, log: (line: string) => void = () => {}): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const c of cases) {
    let row: BenchRow;
    try {
      row = await benchKernelCase(gpu, c, ctx);
    } catch (err) {
      row = { kernel: c.kernel.name, label: c.label, shape: '', ms: NaN, source: 'wall', wallMs: NaN, reps: 0, error: firstLine(err) };
    }
    rows.push(row);
    log(describeRow(row));
  }
  return rows;
}

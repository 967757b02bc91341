import { GpuError } from './errors.js';
import { platform } from '../platform/platform.js';

export interface OpenGpuOptions {
  /** Dawn backend, e.g. 'vulkan', 'metal', 'd3d12'. Node only. Default: Dawn's choice. */
  backend?: string;
  /** Dawn adapter name (a substring as printed by Dawn's adapter list). Node only. */
  adapter?: string;
  powerPreference?: GPUPowerPreference;
  forceFallbackAdapter?: boolean;
  /** Extra Dawn toggles, e.g. ['enable-dawn-features=dump_shaders']. Node only. */
  dawnOptions?: string[];
  /** Features not to request even when offered (e.g. to test the f32-only paths). */
  disableFeatures?: string[];
  /**
   * Which settings (tiles, workgroup sizes, variants) every kernel uses: 'cpu' for CPU adapters
   * (lavapipe, SwiftShader), 'gpu' for real GPUs. 'auto' (default) picks by the adapter, so forcing
   * 'gpu' on a CPU adapter runs, and tests, the code that real GPUs run.
   */
  profile?: 'auto' | GpuProfile;
  /**
   * Lowers `max…` limits as ovgpu sees them, e.g. `{ maxStorageBufferBindingSize: 4096 }`: kernels
   * then split their work as they would at a real limit of that size, so tests reach the chunked
   * paths with small tensors. A value above the device's limit is refused.
   */
  limits?: Readonly<Record<string, number>>;
  /**
   * Milliseconds the calling thread sleeps between polls while ovgpu awaits the GPU (reading results,
   * bench timings). In Node, Dawn otherwise polls without pause, keeping a core busy: harmless with a
   * real GPU, but on a CPU adapter (lavapipe) that core is one the adapter's own threads need. Default:
   * 0.25 on CPU adapters, 0 (Dawn's own polling) on GPUs. No effect in a page.
   */
  pollSleepMs?: number;
}

/** The kernel settings a Gpu was opened with; see OpenGpuOptions.profile. */
export type GpuProfile = 'cpu' | 'gpu';

export interface GpuInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  subgroupMinSize?: number;
  subgroupMaxSize?: number;
}

export interface GpuStats {
  /** Buffers created through this Gpu and not yet destroyed. */
  liveBuffers: number;
  liveBytes: number;
  /** Queue submits made through this Gpu. */
  submits: number;
}

/**
 * The profile 'auto' resolves to: 'cpu' for a CPU implementation of WebGPU (a fallback adapter,
 * software Vulkan, SwiftShader), where a workgroup runs as SIMD lanes on one thread and barriers
 * and workgroup memory are expensive; 'gpu' otherwise.
 */
export function detectProfile(info: GpuInfo): GpuProfile {
  return info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader/i.test(`${info.description} ${info.device}`) ? 'cpu' : 'gpu';
}

/** The longest pollSleepMs accepted: longer sleeps would only add latency to every wait. */
const MAX_POLL_SLEEP_MS = 100;

/** pollSleepMs on CPU adapters unless asked otherwise: completions are seen within a quarter millisecond. */
const CPU_POLL_SLEEP_MS = 0.25;

/** Optional features we use when the adapter offers them. */
const WANTED_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query'] as const;

/** Limits raised to the adapter's maximum: big activations and big workgroups need them. */
const MAX_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
] as const;

/** Opens the GPU: adapter, device with maximum limits and the optional features we use. */
export async function openGpu(options: OpenGpuOptions = {}): Promise<Gpu> {
  const profile = options.profile ?? 'auto';
  if (profile !== 'auto' && profile !== 'gpu' && profile !== 'cpu') {
    throw new GpuError('openGpu', `profile must be 'auto', 'gpu' or 'cpu', got ${JSON.stringify(options.profile)}`);
  }
  const { gpu, keepAlive } = await platform().gpu(options).catch((err: unknown) => {
    throw new GpuError('openGpu', `could not load WebGPU (${String((err as Error)?.message ?? err)})`, { cause: err });
  });
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({
      powerPreference: options.powerPreference,
      forceFallbackAdapter: options.forceFallbackAdapter,
    });
  } catch (err) {
    throw new GpuError('openGpu', `requesting an adapter failed: ${(err as Error).message}`, { cause: err });
  }
  if (!adapter) {
    throw new GpuError(
      'openGpu',
      'no WebGPU adapter found' +
        (options.adapter || options.backend ? ` for adapter=${options.adapter ?? '*'} backend=${options.backend ?? '*'}` : '') +
        `. ${platform().noAdapterAdvice}`,
    );
  }
  for (const [key, v] of Object.entries(options.limits ?? {})) {
    const max = (adapter.limits as unknown as Record<string, number | undefined>)[key];
    if (!key.startsWith('max') || typeof max !== 'number' || !Number.isInteger(v) || v <= 0 || v > max) {
      throw new GpuError('openGpu', `limits.${key}: expected a positive integer no larger than the adapter's ${key} (${max ?? 'no such max… limit'}), got ${v}`);
    }
  }
  const pollSleepMs = options.pollSleepMs;
  if (pollSleepMs !== undefined && !(Number.isFinite(pollSleepMs) && pollSleepMs >= 0 && pollSleepMs <= MAX_POLL_SLEEP_MS)) {
    throw new GpuError('openGpu', `pollSleepMs: expected a number of milliseconds from 0 to ${MAX_POLL_SLEEP_MS}, got ${String(pollSleepMs)}`);
  }
  const disabled = new Set(options.disableFeatures ?? []);
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f) && !disabled.has(f));
  const requiredLimits: Record<string, number> = {};
  // Alignment limits are "better" when smaller: take the adapter's, so graph views and packed
  // uniforms need less padding.
  for (const name of [...MAX_LIMITS, 'minStorageBufferOffsetAlignment', 'minUniformBufferOffsetAlignment']) {
    const v = (adapter.limits as unknown as Record<string, number>)[name];
    if (typeof v === 'number') requiredLimits[name] = v;
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: requiredFeatures as GPUFeatureName[], requiredLimits });
  } catch (err) {
    throw new GpuError('openGpu', `requesting a device failed: ${(err as Error).message}`, { cause: err });
  }
  return new Gpu(device, adapter, keepAlive, profile, options.limits, pollSleepMs);
}

/** One WebGPU device with buffer and submit accounting and error capture. */
export class Gpu {
  readonly device: GPUDevice;
  readonly info: GpuInfo;
  readonly features: ReadonlySet<string>;
  readonly limits: Readonly<Record<string, number>>;
  /** The kernel settings in use: the one asked for, or the adapter's class when 'auto'. */
  readonly profile: GpuProfile;
  /** How long waits for the GPU sleep between polls (OpenGpuOptions.pollSleepMs, resolved). */
  readonly pollSleepMs: number;
  /** Per-device caches owned by higher layers (pipelines, peak measurements), keyed by their owner. */
  readonly caches = new Map<string, Map<string, unknown>>();
  // Dawn aborts the process if the object returned by create() is collected while its device lives.
  readonly #keepAlive: unknown;
  readonly #live = new Map<GPUBuffer, number>();
  #liveBytes = 0;
  #submits = 0;
  #lost: string | undefined;
  #uncaptured: GPUError[] = [];

  /**
   * `lowered`: limits to report below the device's (OpenGpuOptions.limits, checked by openGpu);
   * `pollSleepMs`: OpenGpuOptions.pollSleepMs, checked by openGpu (undefined: by the adapter's class).
   */
  constructor(device: GPUDevice, adapter: GPUAdapter, keepAlive: unknown, profile: 'auto' | GpuProfile = 'auto', lowered: Readonly<Record<string, number>> = {}, pollSleepMs?: number) {
    this.device = device;
    this.#keepAlive = keepAlive;
    const i = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean; subgroupMinSize?: number; subgroupMaxSize?: number };
    this.info = {
      vendor: i.vendor,
      architecture: i.architecture,
      device: i.device,
      description: i.description,
      isFallbackAdapter: !!(i.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter),
      subgroupMinSize: i.subgroupMinSize,
      subgroupMaxSize: i.subgroupMaxSize,
    };
    this.profile = profile === 'auto' ? detectProfile(this.info) : profile;
    // By the adapter's class, not the profile: forcing the gpu profile onto lavapipe keeps its threads.
    this.pollSleepMs = pollSleepMs ?? (detectProfile(this.info) === 'cpu' ? CPU_POLL_SLEEP_MS : 0);
    this.features = new Set(device.features as unknown as Iterable<string>);
    const limits: Record<string, number> = {};
    for (const key in device.limits) {
      const v = (device.limits as unknown as Record<string, unknown>)[key];
      if (typeof v === 'number') limits[key] = v;
    }
    this.limits = Object.freeze({ ...limits, ...lowered });
    void device.lost.then((info) => {
      this.#lost = info.reason === 'destroyed' ? 'the GPU was closed' : `the device was lost (${info.message})`;
    });
    // Errors outside any scope would otherwise only be printed by Dawn; keep them for the next check.
    device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      ev.preventDefault?.();
      this.#uncaptured.push(ev.error);
    };
  }

  /** A cache map owned by one higher layer, created on first use; it dies with this Gpu. */
  cache<T>(owner: string): Map<string, T> {
    let m = this.caches.get(owner);
    if (!m) this.caches.set(owner, (m = new Map()));
    return m as Map<string, T>;
  }

  get closed(): boolean {
    return this.#lost !== undefined;
  }

  /** Throws if the device can no longer be used. */
  assertUsable(op: string): void {
    if (this.#lost) throw new GpuError(op, this.#lost);
  }

  /** Creates a buffer and counts it; destroy it with destroyBuffer. */
  createBuffer(descriptor: GPUBufferDescriptor, op = 'createBuffer'): GPUBuffer {
    this.assertUsable(op);
    const max = this.limits.maxBufferSize ?? Infinity;
    if (descriptor.size > max) {
      throw new GpuError(op, `buffer of ${descriptor.size} bytes exceeds the device's maxBufferSize (${max})`);
    }
    const buffer = this.device.createBuffer(descriptor);
    this.#live.set(buffer, descriptor.size);
    this.#liveBytes += descriptor.size;
    return buffer;
  }

  /** Destroys a buffer made by createBuffer; a second call does nothing. */
  destroyBuffer(buffer: GPUBuffer): void {
    const size = this.#live.get(buffer);
    if (size === undefined) return;
    this.#live.delete(buffer);
    this.#liveBytes -= size;
    buffer.destroy();
  }

  submit(commands: GPUCommandBuffer[]): void {
    this.assertUsable('submit');
    this.device.queue.submit(commands);
    this.#submits++;
  }

  stats(): GpuStats {
    return { liveBuffers: this.#live.size, liveBytes: this.#liveBytes, submits: this.#submits };
  }

  /**
   * Runs `work` inside validation and out-of-memory error scopes and throws a GpuError naming `op`
   * if the GPU reported one. Errors raised while `work` runs are attributed to it; `work` is
   * synchronous, so concurrent calls never share a scope.
   */
  async scoped<T>(op: string, work: () => T): Promise<T> {
    this.assertUsable(op);
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    let result: T;
    let thrown: unknown;
    try {
      result = work();
    } catch (err) {
      thrown = err;
    }
    // Both scopes are popped before awaiting either: awaiting the first pop would let a concurrent
    // call push its scopes on top of ours, and our second pop would take its out-of-memory scope.
    const [validation, oom] = await Promise.all([this.device.popErrorScope(), this.device.popErrorScope()]);
    if (thrown !== undefined) throw thrown;
    const err = validation ?? oom ?? this.#uncaptured.shift();
    if (err) {
      const kind = oom && !validation ? 'out of GPU memory' : 'WebGPU validation error';
      throw new GpuError(op, `${kind}: ${err.message.trim()}`);
    }
    if (this.#lost) throw new GpuError(op, this.#lost);
    return result!;
  }

  /**
   * Awaits a pending WebGPU operation of this device (a buffer map, onSubmittedWorkDone) as
   * pollSleepMs says: the calling thread sleeps between polls where the platform would otherwise
   * poll without pause (Node); otherwise the promise itself.
   */
  settle<T>(promise: Promise<T>): Promise<T> {
    const wait = platform().waitQuietly;
    return wait && this.pollSleepMs > 0 ? wait(promise, this.pollSleepMs) : promise;
  }

  /**
   * Maps a MAP_READ buffer and returns a copy of `size` bytes from its start. WebGPU rejects a map
   * with an empty AbortError when the device is lost or closed, or the buffer destroyed, before it
   * resolves: that becomes a GpuError naming `op` and saying which.
   */
  async mapRead(op: string, buffer: GPUBuffer, size?: number): Promise<ArrayBuffer> {
    try {
      await this.settle(buffer.mapAsync(0x0001 /* GPUMapMode.READ */, 0, size));
    } catch (err) {
      throw new GpuError(op, `${await this.#whyAborted()} while this call was in flight`, { cause: err });
    }
    const bytes = buffer.getMappedRange(0, size).slice(0);
    buffer.unmap();
    return bytes;
  }

  /** Why pending GPU work was aborted: a loss is reported through device.lost, maybe a little later. */
  async #whyAborted(): Promise<string> {
    if (!this.#lost) await Promise.race([this.device.lost, new Promise((r) => setTimeout(r, 50))]);
    await Promise.resolve();
    return this.#lost ?? 'its buffer was destroyed (the tensor, plan or model using it was disposed)';
  }

  /** Destroys the device and every buffer still alive; the process can then exit by itself. */
  close(): void {
    if (this.#lost === undefined) this.#lost = 'the GPU was closed';
    for (const buffer of this.#live.keys()) buffer.destroy();
    this.#live.clear();
    this.#liveBytes = 0;
    this.caches.clear();
    this.device.destroy();
    void this.#keepAlive;
  }
}

import type { Gpu } from '../gpu/gpu.js';
import { GpuError } from '../gpu/errors.js';
import { GraphBuilder } from './builder.js';
import type { GraphPlan } from './plan.js';

/** How much a PlanCache keeps: compiled plans by count and by the bytes of the buffers they own. */
export interface PlanCacheLimits {
  /** At most this many plans (default 32). */
  maxPlans?: number;
  /** At most this many bytes of plan-owned buffers: intermediates, inputs, staging (default 256 MiB). */
  maxBytes?: number;
}

export const PLAN_CACHE_DEFAULTS: Readonly<Required<PlanCacheLimits>> = Object.freeze({ maxPlans: 32, maxBytes: 256 * 2 ** 20 });

interface Entry {
  promise: Promise<GraphPlan>;
  plan?: GraphPlan;
  /** Calls of `use` holding the plan: it is never freed under them. */
  users: number;
  /** Dropped from the cache; freed when its last user is done. */
  evicted: boolean;
}

/**
 * Compiled plans by key (a batch size, a box count, …), each built and compiled once: what models
 * keep, since a plan serves one set of input shapes. Least recently used plans are freed once the
 * cache holds more than `maxPlans` plans or `maxBytes` bytes; eviction never frees a plan in use
 * (inside `use`), so the cache may exceed its limits while every plan is busy. `dispose()` frees
 * every plan at once, busy ones included (their runs reject saying the plan was disposed: the
 * owner is going away, with the weights those runs read); a plan still compiling frees itself
 * when it finishes.
 */
export class PlanCache {
  readonly gpu: Gpu;
  /** Names the owner in errors after disposal. */
  readonly owner: string;
  readonly limits: Readonly<Required<PlanCacheLimits>>;
  /** In least recently used order. */
  readonly #entries = new Map<string, Entry>();
  #disposed = false;

  constructor(gpu: Gpu, owner: string, limits: PlanCacheLimits = {}) {
    this.gpu = gpu;
    this.owner = owner;
    const { maxPlans = PLAN_CACHE_DEFAULTS.maxPlans, maxBytes = PLAN_CACHE_DEFAULTS.maxBytes } = limits;
    if (!(Number.isInteger(maxPlans) && maxPlans >= 1)) throw new GpuError(owner, `plan cache maxPlans must be a positive integer, got ${maxPlans}`);
    if (!(maxBytes >= 0)) throw new GpuError(owner, `plan cache maxBytes must be a non-negative number, got ${maxBytes}`);
    this.limits = Object.freeze({ maxPlans, maxBytes });
  }

  /** Plans held (compiled or compiling). */
  get size(): number {
    return this.#entries.size;
  }

  /** Bytes of the buffers the compiled plans own. */
  get bytes(): number {
    let sum = 0;
    for (const e of this.#entries.values()) sum += e.plan?.memory.ownedBytes ?? 0;
    return sum;
  }

  /**
   * Runs `work` with the plan for `key`, building the graph with `build` and compiling it on first
   * use. The plan stays alive until `work` settles, even if the cache evicts it meanwhile.
   */
  async use<T>(key: string, build: (g: GraphBuilder) => void, work: (plan: GraphPlan) => Promise<T>): Promise<T> {
    if (this.#disposed) throw new GpuError(this.owner, 'it was disposed');
    let entry = this.#entries.get(key);
    if (entry) this.#entries.delete(key);
    else entry = this.#compile(key, build);
    this.#entries.set(key, entry);
    entry.users++;
    try {
      const plan = await entry.promise;
      if (this.#disposed) throw new GpuError(this.owner, 'it was disposed while this call was in flight');
      return await work(plan);
    } catch (err) {
      // A dispose() during the call destroys weights the plan binds; whatever WebGPU then reports
      // (a destroyed buffer in a submit, an aborted map), the cause is the disposal: say so.
      if (this.#disposed && !(err instanceof GpuError && /disposed/.test(err.message))) {
        throw new GpuError(this.owner, 'it was disposed while this call was in flight', { cause: err });
      }
      throw err;
    } finally {
      entry.users--;
      if (entry.evicted && entry.users === 0) entry.plan?.dispose();
      if (!this.#disposed) this.#trim();
    }
  }

  #compile(key: string, build: (g: GraphBuilder) => void): Entry {
    const g = new GraphBuilder();
    build(g);
    const e: Entry = { promise: g.compile(this.gpu), users: 0, evicted: false };
    e.promise.then(
      (plan) => (this.#disposed ? plan.dispose() : (e.plan = plan)),
      () => this.#entries.get(key) === e && this.#entries.delete(key),
    );
    return e;
  }

  /** Frees least recently used idle plans until the cache is within its limits. */
  #trim(): void {
    let count = this.#entries.size;
    let bytes = this.bytes;
    for (const [key, e] of this.#entries) {
      if (count <= this.limits.maxPlans && bytes <= this.limits.maxBytes) return;
      if (e.users > 0 || !e.plan) continue;
      this.#entries.delete(key);
      e.evicted = true;
      e.plan.dispose();
      count--;
      bytes -= e.plan.memory.ownedBytes;
    }
  }

  dispose(): void {
    this.#disposed = true;
    for (const e of this.#entries.values()) e.plan?.dispose();
    this.#entries.clear();
  }
}

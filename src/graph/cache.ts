import type { Gpu } from '../gpu/gpu.js';
import { GpuError } from '../gpu/errors.js';
import { GraphBuilder } from './builder.js';
import type { GraphPlan } from './plan.js';

/**
 * Compiled plans by key (a batch size, a box count, …), each built and compiled once: what models
 * keep, since a plan serves one set of input shapes. `dispose()` frees every compiled plan at once;
 * a plan still compiling frees itself when it finishes.
 */
export class PlanCache {
  readonly gpu: Gpu;
  /** Names the owner in errors after disposal. */
  readonly owner: string;
  readonly #entries = new Map<string, { promise: Promise<GraphPlan>; plan?: GraphPlan }>();
  #disposed = false;

  constructor(gpu: Gpu, owner: string) {
    this.gpu = gpu;
    this.owner = owner;
  }

  /** The plan for `key`, building the graph with `build` and compiling it on first use. */
  get(key: string, build: (g: GraphBuilder) => void): Promise<GraphPlan> {
    if (this.#disposed) return Promise.reject(new GpuError(this.owner, 'it was disposed'));
    let entry = this.#entries.get(key);
    if (!entry) {
      const g = new GraphBuilder();
      build(g);
      const e: { promise: Promise<GraphPlan>; plan?: GraphPlan } = { promise: g.compile(this.gpu) };
      e.promise.then(
        (plan) => (this.#disposed ? plan.dispose() : (e.plan = plan)),
        () => this.#entries.delete(key),
      );
      this.#entries.set(key, (entry = e));
    }
    return entry.promise;
  }

  dispose(): void {
    this.#disposed = true;
    for (const { plan } of this.#entries.values()) plan?.dispose();
    this.#entries.clear();
  }
}

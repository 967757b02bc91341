// A model's public calls and its disposal. dispose() refuses new calls at once but lets the calls
// already in flight finish: the weights, plans and buffers they read are freed when the last one
// settles (freeing them under a running call would make it fail, or read freed memory). A call
// that fails because the GPU was lost or closed is reported under the call's own name, with the
// low-level error (which names the op, e.g. `graph run`) kept as its cause and in its message.
import type { Gpu } from '../gpu/gpu.js';
import { GpuError } from '../gpu/errors.js';

export class ModelLifetime {
  readonly #gpu: Gpu;
  /** Names the model in "the … was disposed". */
  readonly #what: string;
  #busy = 0;
  #disposed = false;
  /** What dispose() asked to free, waiting for the last call in flight. */
  #free: (() => void) | undefined;

  constructor(gpu: Gpu, what: string) {
    this.#gpu = gpu;
    this.#what = what;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Calls in flight. */
  get busy(): number {
    return this.#busy;
  }

  /**
   * Runs the public call `op`. Rejects at once once disposed or when the GPU is gone; otherwise the
   * model's resources stay alive until `work` settles. Inner steps of a call run inside its `work`
   * directly, never through `call` again (they would be refused after a dispose).
   */
  async call<T>(op: string, work: () => Promise<T>): Promise<T> {
    if (this.#disposed) throw new GpuError(op, `the ${this.#what} was disposed`);
    this.#gpu.assertUsable(op);
    this.#busy++;
    try {
      return await work();
    } catch (err) {
      throw this.#fault(op, err);
    } finally {
      if (--this.#busy === 0) this.#release();
    }
  }

  /** Marks the model disposed and frees its resources with `free`, now or when the last call in flight settles. */
  dispose(free: () => void): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#free = free;
    if (this.#busy === 0) this.#release();
  }

  #release(): void {
    const free = this.#free;
    this.#free = undefined;
    free?.();
  }

  /** A failure caused by a lost or closed GPU, named by the call; any other error as it is. */
  #fault(op: string, err: unknown): unknown {
    if (!this.#gpu.closed || (err instanceof GpuError && err.op === op)) return err;
    const message = err instanceof Error ? (err instanceof GpuError ? err.message : `${err.name}: ${err.message}`) : String(err);
    return new GpuError(op, /the GPU was closed|the device was lost/.test(message) ? message : `the GPU was lost or closed (${message})`, { cause: err });
  }
}

// Optimizers over parameter tensors, with PyTorch's update formulas and their state on the GPU:
// `step(grads)` updates every parameter in place in one submit (kernels.optimizerStepKernel).
// A graph can run the same update: `update` is the kernel's options and `inputsOf(i, grad)` one
// parameter's inputs.
import type { Gpu } from './gpu/gpu.js';
import { GpuError, check } from './gpu/errors.js';
import { shapeString } from './dtype.js';
import { Tensor } from './tensor.js';
import { infosOf } from './kernels/runtime.js';
import { optimizerStateInfos, optimizerStep, optimizerStepKernel, type AdamUpdate, type OptimizerUpdate } from './kernels/optimizerStep.js';

/** The optimizers' shared machinery: parameters, GPU state, one-submit steps. */
export abstract class Optimizer {
  readonly gpu: Gpu;
  readonly params: readonly Tensor[];
  /** The update every step applies: optimizerStepKernel's options. */
  readonly update: OptimizerUpdate;
  /** Per parameter: its state tensors (zeros initially) in the kernel's input order after param and grad. */
  readonly state: readonly (readonly Tensor[])[];
  #disposed = false;

  protected constructor(gpu: Gpu, params: readonly Tensor[], update: OptimizerUpdate) {
    const name = new.target.name;
    check(Array.isArray(params) && params.length > 0, name, 'params must be a non-empty array of tensors');
    params.forEach((p, i) => check(p instanceof Tensor && p.gpu === gpu && !p.disposed, name, `params[${i}] must be a live Tensor of this Gpu`));
    check(new Set(params).size === params.length, name, 'params repeat a tensor');
    // The kernel's own checks (hyperparameters, dtypes) before anything is allocated.
    optimizerStepKernel.outputs(params.flatMap((p) => [p, p, ...optimizerStateInfos(update, p)]), update);
    this.gpu = gpu;
    this.params = [...params];
    this.update = update;
    const state: Tensor[][] = [];
    try {
      for (const p of params) state.push(optimizerStateInfos(update, p).map((s) => Tensor.empty(gpu, s.shape, s.dtype)));
    } catch (err) {
      for (const t of state.flat()) t.dispose();
      throw err;
    }
    this.state = state;
  }

  /** One parameter's inputs to optimizerStepKernel for its gradient (a Tensor here; a graph passes its values). */
  inputsOf<G>(i: number, grad: G): (Tensor | G)[] {
    return [this.params[i]!, grad, ...this.state[i]!];
  }

  /** Applies one update to every parameter from its gradient (same shapes), in place, in one submit. */
  async step(grads: readonly Tensor[]): Promise<void> {
    const name = this.constructor.name;
    if (this.#disposed) throw new GpuError(name, 'step after dispose()');
    check(Array.isArray(grads) && grads.length === this.params.length, name, () => `step needs one gradient per parameter (${this.params.length}), got ${grads?.length}`);
    const infos = infosOf(grads);
    infos.forEach((g, i) => {
      const p = this.params[i]!;
      check(g.shape.length === p.shape.length && g.shape.every((d, k) => d === p.shape[k]), name, () => `grads[${i}] of shape ${shapeString(g.shape)} must have params[${i}]'s shape ${shapeString(p.shape)}`);
    });
    await optimizerStep(this.gpu, this.update, grads.map((g, i) => this.inputsOf(i, g)));
  }

  /** Frees the optimizer's state (not the parameters). */
  dispose(): void {
    this.#disposed = true;
    for (const t of this.state.flat()) t.dispose();
  }
}

export interface SgdOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

/** torch.optim.SGD: d = g + weightDecay·p; momentum buffer (the first step's is d); nesterov; p -= lr·d. */
export class Sgd extends Optimizer {
  constructor(gpu: Gpu, params: readonly Tensor[], o: SgdOptions) {
    super(gpu, params, { kind: 'sgd', lr: o?.lr, momentum: o?.momentum ?? 0, dampening: o?.dampening ?? 0, nesterov: o?.nesterov ?? false, weightDecay: o?.weightDecay ?? 0 });
  }
}

export interface AdamOptions {
  lr?: number;
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
}

function adamUpdate(o: AdamOptions = {}, decoupled: boolean, weightDecay: number): AdamUpdate {
  return { kind: 'adam', lr: o.lr ?? 1e-3, betas: o.betas ?? [0.9, 0.999], eps: o.eps ?? 1e-8, weightDecay: o.weightDecay ?? weightDecay, decoupled };
}

/** torch.optim.Adam (bias-corrected, amsgrad off; weightDecay adds weightDecay·p to the gradient). Defaults as PyTorch. */
export class Adam extends Optimizer {
  constructor(gpu: Gpu, params: readonly Tensor[], o: AdamOptions = {}) {
    super(gpu, params, adamUpdate(o, false, 0));
  }
}

/** torch.optim.AdamW: Adam with decoupled weight decay p ·= 1 − lr·weightDecay (default 0.01, as PyTorch). */
export class AdamW extends Optimizer {
  constructor(gpu: Gpu, params: readonly Tensor[], o: AdamOptions = {}) {
    super(gpu, params, adamUpdate(o, true, 0.01));
  }
}

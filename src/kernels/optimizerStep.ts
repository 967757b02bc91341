import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, uniforms, type Access, type Dispatch, type Kernel, type Program, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import optimizerStepWgsl from '../../shaders/optimizerStep.wgsl';

/** torch.optim.SGD's hyperparameters (maximize off). */
export interface SgdUpdate {
  kind: 'sgd';
  lr: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
}

/** torch.optim.Adam's (decoupled false) or AdamW's (decoupled true) hyperparameters (amsgrad, maximize off). */
export interface AdamUpdate {
  kind: 'adam';
  lr: number;
  betas: readonly [number, number];
  eps: number;
  weightDecay: number;
  decoupled: boolean;
}

export type OptimizerUpdate = SgdUpdate | AdamUpdate;

/** Names of one parameter's inputs to optimizerStepKernel, in order. */
export function optimizerInputNames(u: OptimizerUpdate): string[] {
  if (u.kind === 'adam') return ['param', 'grad', 'expAvg', 'expAvgSq', 'step'];
  return u.momentum !== 0 ? ['param', 'grad', 'momentumBuffer', 'step'] : ['param', 'grad'];
}

const NAME = 'optimizerStep';
const WG = 64;

/**
 * One optimizer step over any number of f32 parameters, IN PLACE: no outputs. Inputs are, per
 * parameter, `optimizerInputNames(update)`: the parameter, its gradient (same shape), its state
 * (same shape, zeros initially) and `step`, an i32 [1] count of the steps it has taken (0
 * initially; incremented by the kernel). All of them except the gradient are written. Options
 * are the update (see SgdUpdate, AdamUpdate), PyTorch's formulas exactly.
 */
export const optimizerStepKernel: Kernel<OptimizerUpdate> = {
  name: NAME,
  outputs(inputs, u) {
    check(u && (u.kind === 'sgd' || u.kind === 'adam'), NAME, () => `update.kind must be 'sgd' or 'adam', got ${JSON.stringify(u?.kind)}`);
    const finite = (name: string, x: unknown) => check(typeof x === 'number' && Number.isFinite(x) && x >= 0, NAME, `${name} must be a finite number >= 0, got ${String(x)}`);
    finite('lr', u.lr);
    finite('weightDecay', u.weightDecay);
    if (u.kind === 'sgd') {
      finite('momentum', u.momentum);
      finite('dampening', u.dampening);
      check(!u.nesterov || (u.momentum > 0 && u.dampening === 0), NAME, 'nesterov needs momentum > 0 and dampening 0 (as PyTorch)');
    } else {
      check(Array.isArray(u.betas) && u.betas.length === 2 && u.betas.every((b) => typeof b === 'number' && b >= 0 && b < 1), NAME, () => `betas must be two numbers in [0, 1), got ${JSON.stringify(u.betas)}`);
      finite('eps', u.eps);
    }
    const names = optimizerInputNames(u);
    check(inputs.length > 0 && inputs.length % names.length === 0, NAME, () => `expected inputs [${names.join(', ')}] per parameter, got ${inputs.length} inputs`);
    for (let at = 0; at < inputs.length; at += names.length) {
      const param = inputs[at]!;
      const which = `parameter ${at / names.length}`;
      check(param.dtype === 'f32', NAME, `${which}: param must be f32, got ${param.dtype}`);
      names.forEach((name, i) => {
        const t = inputs[at + i]!;
        if (name === 'step') {
          check(t.dtype === 'i32' && sizeOf(t.shape) === 1, NAME, () => `${which}: step must be an i32 tensor of one element, got ${t.dtype} ${shapeString(t.shape)}`);
        } else if (i > 0) {
          check(t.dtype === 'f32' && t.shape.length === param.shape.length && t.shape.every((d, k) => d === param.shape[k]), NAME, () => `${which}: ${name} must be f32 ${shapeString(param.shape)} like param, got ${t.dtype} ${shapeString(t.shape)}`);
        }
      });
    }
    return [];
  },
  plan(gpu, inputs, _outputs, u) {
    const group = optimizerInputNames(u).length;
    const entryPoint = u.kind === 'adam' ? 'adam' : u.momentum !== 0 ? 'sgd_momentum' : 'sgd_plain';
    const bindings: Access[] = ['write', 'read', ...new Array<Access>(group - 2).fill('write')];
    const program: Program = { name: `${NAME}.${entryPoint}`, key: '', code: optimizerStepWgsl, entryPoint, constants: { WG }, bindings };
    const counter: Program = { name: `${NAME}.count`, key: '', code: optimizerStepWgsl, entryPoint: 'count', bindings: ['write'] };
    const dispatches: Dispatch[] = [];
    let elements = 0;
    for (let at = 0; at < inputs.length; at += group) {
      const n = sizeOf(inputs[at]!.shape);
      elements += n;
      const common = [n, { f32: u.lr }, { f32: u.weightDecay }];
      const values =
        u.kind === 'sgd'
          ? uniforms(...common, { f32: u.momentum }, { f32: 1 - u.dampening }, { f32: 0 }, { f32: 0 }, { f32: 0 }, { f32: 0 }, { f32: 0 }, u.nesterov ? 1 : 0)
          : uniforms(...common, { f32: u.betas[0] }, { f32: 1 - u.betas[0] }, { f32: u.betas[1] }, { f32: 1 - u.betas[1] }, { f32: u.eps }, { f32: Math.log(u.betas[0]) }, { f32: Math.log(u.betas[1]) }, u.decoupled ? 1 : 0);
      // Bindings: param, grad, step, then the state (so that sgd's leaves no gap).
      const tensors = group === 2 ? [at, at + 1] : [at, at + 1, at + group - 1, ...Array.from({ length: group - 3 }, (_, i) => at + 2 + i)];
      if (n > 0) dispatches.push({ program, tensors, uniforms: values, workgroups: grid1d(gpu, n, WG) });
      if (group > 2) dispatches.push({ program: counter, tensors: [at + group - 1], uniforms: uniforms(0), workgroups: [1, 1, 1] });
    }
    return { dispatches, flops: elements * (u.kind === 'adam' ? 14 : 5), bytes: elements * 4 * (group === 2 ? 3 : group === 4 ? 5 : 7) };
  },
};

/** Runs one update over parameters in place; each entry of `groups` is one parameter's inputs as `optimizerInputNames(update)`. */
export async function optimizerStep(gpu: Gpu, update: OptimizerUpdate, groups: readonly (readonly Tensor[])[]): Promise<void> {
  await runKernel(gpu, optimizerStepKernel, groups.flat(), update);
}

// ---- CPU reference (for tests only): float64, PyTorch's single-tensor formulas ----

/** One parameter's state for the reference: momentum buffer (sgd) or m, v (adam), and the step count. */
export interface OptimizerReferenceState {
  s1: Float64Array;
  s2: Float64Array;
  step: number;
}

/** Applies one update to `param` (and `state`) in place. */
export function optimizerStepReference(u: OptimizerUpdate, param: Float64Array, grad: ArrayLike<number>, state: OptimizerReferenceState): void {
  for (let i = 0; i < param.length; i++) {
    if (u.kind === 'sgd') {
      let d = grad[i]! + u.weightDecay * param[i]!;
      if (u.momentum !== 0) {
        const buf = state.step === 0 ? d : u.momentum * state.s1[i]! + (1 - u.dampening) * d;
        state.s1[i] = buf;
        d = u.nesterov ? d + u.momentum * buf : buf;
      }
      param[i] = param[i]! - u.lr * d;
    } else {
      const [b1, b2] = u.betas;
      const t = state.step + 1;
      let g = grad[i]!;
      if (u.decoupled) param[i] = param[i]! * (1 - u.lr * u.weightDecay);
      else g += u.weightDecay * param[i]!;
      const m = (state.s1[i] = b1 * state.s1[i]! + (1 - b1) * g);
      const v = (state.s2[i] = b2 * state.s2[i]! + (1 - b2) * g * g);
      const denom = Math.sqrt(v) / Math.sqrt(1 - b2 ** t) + u.eps;
      param[i] = param[i]! - (u.lr / (1 - b1 ** t)) * (m / denom);
    }
  }
  state.step++;
}

/** Shapes of the state tensors a parameter needs (zeros initially), as optimizerInputNames after param and grad. */
export function optimizerStateInfos(u: OptimizerUpdate, param: TensorInfo): TensorInfo[] {
  return optimizerInputNames(u)
    .slice(2)
    .map((name) => (name === 'step' ? { shape: [1], dtype: 'i32' as const } : { shape: param.shape, dtype: 'f32' as const }));
}

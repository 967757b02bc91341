// Several kernels timed as one bench case (e.g. unfused attention: matmul → softmax → matmul, to
// compare with the fused kernel in the same run). `sequenceKernel` turns a list of steps into one
// Kernel whose plan is the steps' dispatches in order, with the intermediate tensors (and the
// steps' own scratch) as its scratch: the harness prepares it once and times it as any other case.
import { remapDispatch, type Kernel, type TensorInfo } from '../src/kernels/program.js';
import type { BenchStep, StepInput } from './types.js';

/** Shapes of every step's outputs, validated by the steps' own kernels. */
function stepOutputs(name: string, steps: readonly BenchStep[], inputs: readonly TensorInfo[]): TensorInfo[][] {
  const outs: TensorInfo[][] = [];
  const info = (ref: StepInput) => {
    if (typeof ref === 'number') return inputs[ref];
    return outs[ref.step]?.[ref.output ?? 0];
  };
  for (const [i, s] of steps.entries()) {
    const infos = s.inputs.map((ref) => {
      const t = info(ref);
      if (!t) throw new Error(`sequence ${name}: step ${i} (${s.kernel.name}) refers to ${JSON.stringify(ref)}, which does not exist before it`);
      return t;
    });
    outs.push(s.kernel.outputs(infos, s.options));
  }
  return outs;
}

/** One Kernel running `steps` in order; its outputs are the last step's. `name` is the bench row's kernel column. */
export function sequenceKernel(name: string, steps: readonly BenchStep[]): Kernel<Record<string, never>> {
  if (steps.length === 0) throw new Error(`sequence ${name}: no steps`);
  return {
    name,
    outputs: (inputs) => stepOutputs(name, steps, inputs).at(-1)!,
    plan(gpu, inputs, outputs) {
      const outs = stepOutputs(name, steps, inputs);
      const scratch: TensorInfo[] = [];
      const addScratch = (t: TensorInfo) => inputs.length + outputs.length + scratch.push(t) - 1;
      // Where each step's outputs live among [...inputs, ...outputs, ...scratch].
      const stepTensors: number[][] = [];
      const at = (ref: StepInput) => (typeof ref === 'number' ? ref : stepTensors[ref.step]![ref.output ?? 0]!);
      const infoOf = (ref: StepInput) => (typeof ref === 'number' ? inputs[ref]! : outs[ref.step]![ref.output ?? 0]!);
      const dispatches = [];
      let flops = 0;
      let bytes = 0;
      for (const [i, s] of steps.entries()) {
        const last = i === steps.length - 1;
        const mine = outs[i]!.map((t, o) => (last ? inputs.length + o : addScratch(t)));
        const plan = s.kernel.plan(gpu, s.inputs.map(infoOf), outs[i]!, s.options);
        // The step's tensor indices ([...its inputs, ...its outputs, ...its scratch]) in ours.
        const map = [...s.inputs.map(at), ...mine, ...(plan.scratch ?? []).map(addScratch)];
        for (const d of plan.dispatches) dispatches.push(remapDispatch(d, map));
        stepTensors.push(mine);
        flops += plan.flops ?? 0;
        bytes += plan.bytes ?? 0;
      }
      return { dispatches, scratch, flops, bytes };
    },
  };
}

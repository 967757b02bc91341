import { GraphBuilder, Tensor, type Gpu } from '../../src/index.js';
import type { ReadArray } from '../../src/dtype.js';
import type { Kernel } from '../../src/kernels/program.js';
import { infosOf, runKernel } from '../../src/kernels/runtime.js';

/**
 * Runs `kernel` on `gpu` eagerly and as a one-node graph (inputs fed as tensors), for comparing a
 * device with a lowered binding limit, where the kernel splits its work, with one where it does not.
 * Returns both runs' outputs and how many dispatches the kernel's plan has there.
 */
export async function runEagerAndGraph<O>(gpu: Gpu, kernel: Kernel<O>, inputs: readonly Tensor[], options: O): Promise<{ eager: ReadArray[]; graph: ReadArray[]; dispatches: number }> {
  const infos = infosOf(inputs);
  const dispatches = kernel.plan(gpu, infos, kernel.outputs(infos, options), options).dispatches.length;
  const outputs = await runKernel(gpu, kernel, inputs, options);
  const eager = await Promise.all(outputs.map((t) => t.read()));
  for (const t of outputs) t.dispose();
  const g = new GraphBuilder();
  const values = g.op(kernel, inputs.map((t, i) => g.input(`x${i}`, t.shape, t.dtype)), options);
  values.forEach((v, i) => g.output(`y${i}`, v));
  const plan = await g.compile(gpu);
  try {
    const { outputs: out } = await plan.run(Object.fromEntries(inputs.map((t, i) => [`x${i}`, t])));
    return { eager, graph: values.map((_, i) => out[`y${i}`]!), dispatches };
  } finally {
    plan.dispose();
  }
}

/** The index of the first element where a and b differ, or -1 (a plain loop: these run to 1e8 elements). */
export function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>, at = 0): number {
  for (let i = 0; i < b.length; i++) if (!Object.is(a[at + i], b[i])) return at + i;
  return -1;
}

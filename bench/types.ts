// What a kernel's bench row file (bench/kernels/<name>.ts) exports: `cases`, a list of these.
// The harness (bench/harness.ts) uploads random inputs, prepares the kernel's plan once, times
// many dispatches in one submit (timestamp queries where the adapter has them), and reports
// GFLOP/s or GB/s from the plan's `flops` / `bytes`, next to peers run in the same process.
import type { DType } from '../src/dtype.js';
import type { Kernel } from '../src/kernels/program.js';

export interface BenchInput {
  shape: number[];
  dtype?: DType;
  /** Explicit data (e.g. boxes); random uniform in [-1, 1) when absent. */
  data?: ArrayLike<number>;
}

/**
 * A TF.js implementation of the same computation, for the peer column. `tf` is @tensorflow/tfjs-core,
 * whose Node bundle registers no chained ops: write `tf.reshape(x, s)`, not `x.reshape(s)`.
 */
export type TfjsPeer = (tf: any, inputs: any[]) => any;

export interface KernelBenchCase<O = any> {
  kernel: Kernel<O>;
  /** Where the shape comes from and what it is, e.g. 'CLIP B/32 b8 MLP fc1 400x768x3072'. */
  label: string;
  inputs: BenchInput[];
  options: O;
  /** The same computation in TF.js WebGPU, when it has one. */
  tfjs?: TfjsPeer;
}

/** A step's input: an index into the case's `inputs`, or an output (default 0) of an earlier step. */
export type StepInput = number | { step: number; output?: number };

/** One kernel of a multi-kernel case (bench/sequence.ts): its outputs can feed later steps. */
export interface BenchStep<O = any> {
  kernel: Kernel<O>;
  inputs: StepInput[];
  options: O;
}

// Reverse-mode autodiff over a recorded graph, as JAX and tinygrad do it: every differentiable
// kernel has a rule (one small function in this folder) that, given the upstream gradients of a
// node's outputs, adds ordinary nodes for its inputs' gradients. The backward pass is then just
// more nodes: planned, submitted and profiled like the forward. Values the rules read (a matmul's
// operands, a layerNorm's input) stay alive because the memory planner sees those reads.
import { GpuError } from '../../gpu/errors.js';
import { shapeString, sizeOf } from '../../dtype.js';
import type { Kernel } from '../../kernels/program.js';
import { padKernel } from '../../kernels/copy.js';
import type { GraphBuilder, GraphNode, Value } from '../builder.js';
import { RULES } from './rules.js';

export interface GradientOptions {
  /** Upstream gradient of the loss, of its shape and dtype; by default 1 (the loss must then have one element). */
  seed?: Value;
  /** Zeros for `wrt` entries the loss does not depend on, instead of an error. */
  allowUnused?: boolean;
}

/** What a backward rule sees of one node. */
export interface GradContext {
  readonly g: GraphBuilder;
  readonly node: GraphNode;
  /** Upstream gradient of each output; undefined where none flows (e.g. an unused second output). */
  readonly dys: readonly (Value | undefined)[];
  /** Which inputs need a gradient (they depend on a `wrt` value). */
  readonly needs: readonly boolean[];
  /** A label for a node the rule adds, derived from the forward node's. */
  label(what: string): string;
  /** Fails the build: input `i` needs a gradient, but this op has none for it. */
  notDifferentiable(i: number, why: string): never;
}

/** One kernel's backward: the gradient of each input (undefined where `needs` is false). */
export type GradRule = (ctx: GradContext) => readonly (Value | undefined)[];

const isFloat = (v: Value) => v.dtype === 'f32' || v.dtype === 'f16';
const describe = (v: Value) => `${v.dtype} ${shapeString(v.shape)}`;

/** Where a value comes from, for error messages. */
function origin(g: GraphBuilder, v: Value): string {
  const s = v.root().value.source;
  if (s.kind === 'node') return `made by node ${g.nodes[s.node]!.label}`;
  if (s.kind === 'input') return `input ${JSON.stringify(s.name)}`;
  return s.kind;
}

/** See `GraphBuilder.gradients`. */
export function buildGradients(g: GraphBuilder, loss: Value, wrt: readonly Value[], options: GradientOptions): Value[] {
  const fail = (message: string): never => {
    throw new GpuError('graph gradients', message);
  };
  if (!isFloat(loss)) fail(`the loss ${loss} must be f32 or f16`);
  const seed = options.seed ?? (sizeOf(loss.shape) === 1 ? g.fill(loss.shape, 1, loss.dtype) : fail(`the loss ${loss} has ${sizeOf(loss.shape)} elements: pass its upstream gradient as options.seed`));
  if (seed.dtype !== loss.dtype || shapeString(seed.shape) !== shapeString(loss.shape)) fail(`seed ${seed} must be ${describe(loss)} like the loss`);

  // Values that depend on some wrt entry, in creation (= topological) order.
  const count = loss.id + 1;
  const fromWrt = new Uint8Array(count);
  for (const w of wrt) if (w.id < count) fromWrt[w.id] = 1;
  for (let id = 0; id < count; id++) {
    const s = g.values[id]!.source;
    if (s.kind === 'view') fromWrt[id] ||= fromWrt[s.base.id]!;
    else if (s.kind === 'node') fromWrt[id] ||= g.nodes[s.node]!.inputs.some((x) => fromWrt[x.id]) ? 1 : 0;
  }

  // Gradient contributions per value id, summed once every consumer has contributed: consumers
  // are created after what they read, so a sweep by descending id sees them all first.
  const pending = new Map<number, Value[]>([[loss.id, [seed]]]);
  const total = new Map<number, Value>();
  const gradOf = (v: Value): Value | undefined => {
    if (total.has(v.id)) return total.get(v.id);
    const parts = pending.get(v.id);
    if (!parts) return undefined;
    const sum = parts.reduce((a, b) => g.add(a, b, `grad sum ${v}`));
    total.set(v.id, sum);
    return sum;
  };
  const contribute = (v: Value, d: Value, by: string) => {
    if (d.dtype !== v.dtype || shapeString(d.shape) !== shapeString(v.shape)) fail(`${by} gave a gradient ${describe(d)} for ${v} (a backward rule's bug)`);
    pending.set(v.id, [...(pending.get(v.id) ?? []), d]);
  };

  const done = new Set<number>();
  for (let id = count - 1; id >= 0; id--) {
    if (!fromWrt[id]) continue;
    const v = g.values[id]!;
    const s = v.source;
    if (s.kind === 'view') {
      const dy = gradOf(v);
      if (dy) contribute(s.base, viewBackward(g, dy, s.base, s.offset), `the view ${v}`);
    } else if (s.kind === 'node' && !done.has(s.node)) {
      done.add(s.node);
      backward(g, g.nodes[s.node]!, fromWrt, gradOf, contribute);
    }
  }

  return wrt.map((w, i) => {
    const d = gradOf(w);
    if (d) return d;
    if (!options.allowUnused) fail(`the loss ${loss} does not depend on wrt[${i}] ${w} (options.allowUnused gives zeros)`);
    return g.fill(w.shape, 0, w.dtype);
  });
}

function backward(g: GraphBuilder, node: GraphNode, fromWrt: Uint8Array, gradOf: (v: Value) => Value | undefined, contribute: (v: Value, d: Value, by: string) => void): void {
  const dys = node.outputs.map(gradOf);
  if (dys.every((d) => d === undefined)) return;
  const needs = node.inputs.map((x) => fromWrt[x.id] === 1);
  const notDifferentiable = (i: number, why: string): never => {
    const x = node.inputs[i]!;
    throw new GpuError('graph gradients', `node ${node.label} (${node.kernel.name}) is not differentiable with respect to its input ${i} (${x}, ${origin(g, x)}), which depends on a wrt value: ${why}`);
  };
  node.inputs.forEach((x, i) => needs[i] && !isFloat(x) && notDifferentiable(i, `${x.dtype} values carry no gradient`));
  const rule = RULES.get(node.kernel as Kernel<unknown>);
  if (!rule) throw new GpuError('graph gradients', `node ${node.label}: no backward rule for kernel ${node.kernel.name}`);
  const grads = rule({ g, node, dys, needs, label: (what) => `${node.label}.grad_${what}`, notDifferentiable });
  node.inputs.forEach((x, i) => {
    const d = grads[i];
    if (needs[i] && d) contribute(x, d, `node ${node.label}`);
  });
}

/** The gradient of a view's base: reshaped, or a contiguous range padded with zeros. */
function viewBackward(g: GraphBuilder, dy: Value, base: Value, offset: number): Value {
  const n = sizeOf(dy.shape);
  const total = sizeOf(base.shape);
  if (n === total) return g.reshape(dy, base.shape);
  const padded = g.op(padKernel, [g.reshape(dy, [n])], { shape: [total], starts: [offset] }, `grad of view ${dy}`)[0]!;
  return g.reshape(padded, base.shape);
}

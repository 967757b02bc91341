import { GpuError } from '../gpu/errors.js';
import type { Gpu } from '../gpu/gpu.js';
import { BYTES_PER_ELEMENT, sizeOf } from '../dtype.js';
import { encodeTensorData, type Tensor } from '../tensor.js';
import { readBuffer } from '../gpu/readback.js';
import { GraphBuilder, type Value } from '../graph/builder.js';
import { GraphPlan } from '../graph/plan.js';
import { reduceKernel, type ReduceOptions } from '../kernels/reduce.js';
import { OnnxEmitter, onnxElementType } from './emitter.js';
import { opExporters, windowOp, type ExportContext } from './ops.js';
import { onnxModelType } from './schema.js';

/** The ONNX operator set exported models import (LayerNormalization needs 17; Reduce* take axes as inputs from 18). */
export const ONNX_OPSET = 18;
/** IR version 8 goes with opsets up to 18. */
const IR_VERSION = 8;

export interface OnnxExportOptions {
  /**
   * Inputs whose dimension 0 is a symbolic batch (`'batch'` in the model; reshapes and slices then
   * leave it free). Default: every input whose dimension 0 equals the first input's. `false`: all
   * shapes static, as in the graph.
   */
  dynamicBatch?: boolean | readonly string[];
  /** The graph's name in the model (default 'ovgpu'). */
  name?: string;
  /** The device that runs the graph, for nodes evaluated once at export (e.g. OWL-ViT's box bias); default a plan's or a constant's. */
  gpu?: Gpu;
}

/** Copies a constant's bytes back (f16 stays f16). */
async function constantBytes(t: Tensor): Promise<Uint8Array> {
  const bytes = await readBuffer(t.gpu, t.buffer, t.byteLength, 'exportOnnx');
  return new Uint8Array(bytes, 0, t.size * BYTES_PER_ELEMENT[t.dtype]);
}

function batchedInputs(g: GraphBuilder, option: OnnxExportOptions['dynamicBatch']): Set<Value> {
  const inputs = [...g.inputs.values()];
  if (option === false || inputs.length === 0) return new Set();
  if (Array.isArray(option)) {
    return new Set(
      option.map((name) => {
        const v = g.inputs.get(name);
        if (!v) throw new GpuError('exportOnnx', `dynamicBatch names ${JSON.stringify(name)}, which is not an input (inputs: ${[...g.inputs.keys()].join(', ')})`);
        if (v.shape.length === 0) throw new GpuError('exportOnnx', `dynamicBatch: input ${JSON.stringify(name)} is a scalar`);
        return v;
      }),
    );
  }
  const b = inputs[0]!.shape[0];
  return new Set(inputs.filter((v) => v.shape.length > 0 && v.shape[0] === b));
}

/**
 * Which values have the batch as dimension 0: the batched inputs, and what is computed from them
 * while dimension 0 survives (not reduced away, not moved by a transpose, not partly sliced).
 */
function batchedValues(g: GraphBuilder, inputs: Set<Value>): Set<Value> {
  const batched = new Set(inputs);
  const keepsDim0 = (v: Value, from: Value) => {
    const o = g.viewOrigins.get(v);
    if (o?.op === 'slice') return o.starts[0] === 0 && o.ends[0] === from.shape[0];
    if (o?.op === 'transpose') return o.perm[0] === 0;
    return true;
  };
  for (const v of g.values) {
    if (v.shape.length === 0) continue;
    if (v.source.kind === 'view') {
      if (batched.has(v.source.base) && keepsDim0(v, v.source.base)) batched.add(v);
    } else if (v.source.kind === 'node') {
      const node = g.nodes[v.source.node]!;
      const from = node.inputs.find((x) => batched.has(x));
      if (!from || !keepsDim0(v, node.inputs[0]!)) continue;
      if (node.kernel === (reduceKernel as unknown)) {
        const o = node.options as ReduceOptions;
        if (o.axes.some((a) => a === 0 || a === -node.inputs[0]!.shape.length)) continue;
      }
      batched.add(v);
    }
  }
  return batched;
}

/**
 * The graph (or a plan's graph) as an ONNX model (opset 18, standard operators only): constants
 * become initializers, inputs and outputs keep their names, dimension 0 of batched inputs is
 * symbolic. Every node is written as an equivalent composition of ONNX operators (attention as
 * MatMul / Softmax, patch embedding as Conv, RoIAlign as RoiAlign, ...); a node without one
 * (backward kernels, NMS, optimizer steps) fails here, naming it. Serialised by protobufjs from
 * ONNX's official message definitions.
 */
export async function exportOnnx(source: GraphBuilder | GraphPlan, options: OnnxExportOptions = {}): Promise<Uint8Array> {
  const g = source instanceof GraphPlan ? source.graph : source;
  if (!(g instanceof GraphBuilder)) throw new GpuError('exportOnnx', 'expected a GraphBuilder or a GraphPlan');
  if (g.outputs.size === 0) throw new GpuError('exportOnnx', 'the graph has no outputs (mark them with g.output)');
  const constants = [...new Set(g.values.flatMap((v) => (v.source.kind === 'constant' ? [v.source.tensor] : [])))];
  const gpu = options.gpu ?? (source instanceof GraphPlan ? source.gpu : constants[0]?.gpu);
  const exporters = opExporters(g.viewOrigins);
  for (const node of g.nodes) {
    if (!exporters.has(node.kernel)) throw new GpuError('exportOnnx', `node ${node.label} (kernel ${node.kernel.name}) has no ONNX form (exportOnnx writes the inference ops; backward kernels, nms, box IoU and optimizer steps have none)`);
  }

  const e = new OnnxEmitter();
  for (const name of [...g.inputs.keys(), ...g.outputs.keys()]) e.reserve(name);
  const dynamic = batchedInputs(g, options.dynamicBatch ?? true);
  const batched = batchedValues(g, dynamic);
  const names = new Map<Value, string>();
  const tensorNames = new Map<Tensor, string>();
  for (const t of constants) tensorNames.set(t, e.tensor('weight', t.shape, onnxElementType(t.dtype, 'constant'), await constantBytes(t)));

  const ctx: ExportContext = {
    e,
    gpu,
    batched: (v) => batched.has(v),
    name(v: Value): string {
      const known = names.get(v);
      if (known) return known;
      const src = v.source;
      let name: string;
      if (src.kind === 'input') name = src.name;
      else if (src.kind === 'constant') name = tensorNames.get(src.tensor)!;
      else if (src.kind === 'fill') {
        const bytes = new Uint8Array(encodeTensorData(new Array<number>(sizeOf(v.shape)).fill(src.value), v.dtype, sizeOf(v.shape), 'exportOnnx'), 0, sizeOf(v.shape) * BYTES_PER_ELEMENT[v.dtype]);
        name = e.tensor('fill', v.shape, onnxElementType(v.dtype, `fill ${v}`), bytes);
      } else if (src.kind === 'view') {
        const origin = g.viewOrigins.get(v);
        if (origin) name = windowOp(ctx, src.base, origin, `view${v.id}`);
        else if (src.offset === 0) {
          // A reshape: a batched leading dimension is left for Reshape to infer.
          const dims = v.shape.map((d, i) => (i === 0 && batched.has(src.base) ? -1 : d));
          name = e.op('Reshape', [ctx.name(src.base), e.i64(dims)], `reshape${v.id}`);
        } else {
          const flat = e.op('Reshape', [ctx.name(src.base), e.i64([-1])], `view${v.id}.flat`);
          const part = e.op('Slice', [flat, e.i64([src.offset]), e.i64([src.offset + sizeOf(v.shape)])], `view${v.id}.slice`);
          name = e.op('Reshape', [part, e.i64(v.shape)], `view${v.id}`);
        }
      } else throw new GpuError('exportOnnx', `${v} is read before its node ran`);
      names.set(v, name);
      return name;
    },
  };

  for (const node of g.nodes) {
    const outs = await exporters.get(node.kernel)!(ctx, node);
    node.outputs.forEach((v, i) => names.set(v, outs[i]!));
  }

  const valueInfo = (name: string, v: Value) => ({
    name,
    type: {
      tensor_type: {
        elem_type: onnxElementType(v.dtype, `${name}`),
        shape: { dim: v.shape.map((d, i) => (i === 0 && batched.has(v) ? { dim_param: 'batch' } : { dim_value: d })) },
      },
    },
  });
  const outputs = [...g.outputs].map(([name, v]) => {
    e.nodes.push({ input: [ctx.name(v)], output: [name], name: `output.${name}`, op_type: 'Identity', attribute: [] });
    return valueInfo(name, v);
  });
  const Model = onnxModelType();
  const model = Model.fromObject({
    ir_version: IR_VERSION,
    opset_import: [{ domain: '', version: ONNX_OPSET }],
    producer_name: 'ovgpu',
    graph: {
      name: options.name ?? 'ovgpu',
      node: e.nodes,
      initializer: e.initializers,
      input: [...g.inputs].map(([name, v]) => valueInfo(name, v)),
      output: outputs,
    },
  });
  return Model.encode(model).finish();
}

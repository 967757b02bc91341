import type { Gpu } from '../gpu/gpu.js';
import { GpuError } from '../gpu/errors.js';
import { Tensor } from '../tensor.js';
import { shapeString, sizeOf } from '../dtype.js';
import { bindingBytes, bindingLimit, type Kernel, type KernelPlan, type Program, type TensorInfo, type TensorSlice } from './program.js';

/**
 * Cache key of a program: its specialisation, never its shapes. The source text is part of it, so
 * two programs that share a name and key (user kernels, two versions of one) never share a pipeline.
 */
export function pipelineKey(p: Program): string {
  const constants = p.constants ? Object.entries(p.constants).sort(([a], [b]) => (a < b ? -1 : 1)) : [];
  return `${p.name}|${p.key}|${p.entryPoint ?? 'main'}|${JSON.stringify(constants)}|${p.bindings.join(',')}|${p.code}`;
}

/** The pipeline descriptor of a program: one bind group of a uniform and its storage bindings. */
function pipelineDescriptor(device: GPUDevice, program: Program): GPUComputePipelineDescriptor {
  const entries: GPUBindGroupLayoutEntry[] = [
    { binding: 0, visibility: 4 /* COMPUTE */, buffer: { type: 'uniform' } },
    ...program.bindings.map(
      (access, i): GPUBindGroupLayoutEntry => ({
        binding: i + 1,
        visibility: 4,
        buffer: { type: access === 'read' ? 'read-only-storage' : 'storage' },
      }),
    ),
  ];
  const layout = device.createPipelineLayout({
    label: program.name,
    bindGroupLayouts: [device.createBindGroupLayout({ label: program.name, entries })],
  });
  return {
    label: program.name,
    layout,
    compute: {
      module: device.createShaderModule({ label: program.name, code: program.code }),
      entryPoint: program.entryPoint ?? 'main',
      constants: program.constants as Record<string, number> | undefined,
    },
  };
}

/** The compute pipeline for a program, compiled once per device and reused by every plan. */
export function getPipeline(gpu: Gpu, program: Program): GPUComputePipeline {
  const cache = gpu.cache<GPUComputePipeline>('pipelines');
  const key = pipelineKey(program);
  let pipeline = cache.get(key);
  if (pipeline) return pipeline;
  pipeline = gpu.device.createComputePipeline(pipelineDescriptor(gpu.device, program));
  cache.set(key, pipeline);
  return pipeline;
}

/**
 * Compiles the pipelines of `programs` that are not cached yet with createComputePipelineAsync, all
 * at once, into the cache getPipeline reads: the driver may compile them in parallel and off the
 * calling thread (in a browser, seconds per shader on a software adapter), and the dispatches that
 * follow find them ready. A shader that fails to compile rejects with an error naming its kernel.
 */
export async function preparePipelines(gpu: Gpu, programs: readonly Program[]): Promise<void> {
  const cache = gpu.cache<GPUComputePipeline>('pipelines');
  const pending = gpu.cache<Promise<GPUComputePipeline>>('pipelines pending');
  const byKey = new Map(programs.map((p) => [pipelineKey(p), p]));
  const compile = async (program: Program) => {
    // The shader module and layout in an error scope of their own: a WGSL error names this kernel.
    const descriptor = await gpu.scoped(program.name, () => pipelineDescriptor(gpu.device, program));
    try {
      return await gpu.device.createComputePipelineAsync(descriptor);
    } catch (err) {
      throw new GpuError(program.name, `its pipeline (entry point ${program.entryPoint ?? 'main'}) did not compile: ${(err as Error)?.message ?? err}`, { cause: err });
    }
  };
  await Promise.all(
    [...byKey].map(([key, program]) => {
      if (cache.has(key)) return undefined;
      let promise = pending.get(key);
      if (!promise) {
        promise = compile(program)
          .then((pipeline) => (cache.set(key, pipeline), pipeline))
          .finally(() => pending.delete(key));
        pending.set(key, promise);
      }
      return promise;
    }),
  );
}

/**
 * Runs `work` in the Gpu's error scope; if it fails, pipelines first created for `plans` during it
 * are dropped from the cache, so a shader that failed to compile is not reused as an invalid object.
 */
export async function scopedWithPipelines<T>(gpu: Gpu, op: string, plans: readonly KernelPlan[], work: () => T): Promise<T> {
  const cache = gpu.cache<GPUComputePipeline>('pipelines');
  const fresh = new Set(plans.flatMap((p) => p.dispatches.map((d) => pipelineKey(d.program))).filter((k) => !cache.has(k)));
  try {
    return await gpu.scoped(op, work);
  } catch (err) {
    for (const k of fresh) cache.delete(k);
    throw err;
  }
}

/** Uniform data of every dispatch of a plan packed into one buffer at aligned offsets. */
export function packUniforms(gpu: Gpu, plans: readonly KernelPlan[]): { data: Uint8Array; offsets: number[][] } {
  const align = gpu.limits.minUniformBufferOffsetAlignment ?? 256;
  const offsets: number[][] = [];
  let size = 0;
  for (const plan of plans) {
    offsets.push(
      plan.dispatches.map((d) => {
        const at = size;
        size = Math.ceil((size + d.uniforms.byteLength) / align) * align;
        return at;
      }),
    );
  }
  const data = new Uint8Array(Math.max(size, 16));
  plans.forEach((plan, p) => plan.dispatches.forEach((d, i) => data.set(new Uint8Array(d.uniforms), offsets[p]![i]!)));
  return { data, offsets };
}

/** A dispatch's binding of a whole tensor or of a slice of it, within the tensor's own range. */
function bindingOf(ranges: readonly GPUBufferBinding[], t: number | TensorSlice): GPUBufferBinding {
  if (typeof t === 'number') return ranges[t]!;
  const r = ranges[t.tensor]!;
  return { buffer: r.buffer, offset: (r.offset ?? 0) + t.offset, size: t.size };
}

/**
 * Throws before anything is dispatched if one of a plan's bindings exceeds the binding limit:
 * kernels that split their work bind slices under it; any other tensor is bound whole. `op` names
 * the call or graph node; `infos` are [...inputs, ...outputs, ...scratch].
 */
export function checkBindings(gpu: Gpu, op: string, kernel: string, plan: KernelPlan, infos: readonly TensorInfo[], inputs: number, outputs: number): void {
  const limit = bindingLimit(gpu);
  for (const d of plan.dispatches) {
    for (const t of d.tensors) {
      const i = typeof t === 'number' ? t : t.tensor;
      const bytes = typeof t === 'number' ? bindingBytes(infos[i]!) : t.size;
      if (bytes <= limit) continue;
      const role = i < inputs ? `input ${i}` : i < inputs + outputs ? `output ${i - inputs}` : `scratch tensor ${i - inputs - outputs}`;
      const what = typeof t === 'number' ? 'bound whole' : `a ${bytes}-byte slice of it is bound`;
      const info = infos[i]!;
      throw new GpuError(
        op,
        `${role} (${info.dtype} ${shapeString(info.shape)}, ${bindingBytes(info)} bytes) is ${what}, above the device's maxStorageBufferBindingSize of ${limit} bytes; ` +
          `${kernel} does not split it: call it on smaller pieces (fewer rows or a smaller batch) and join the results`,
      );
    }
  }
}

/**
 * Bind groups for one plan's dispatches. `ranges` holds [...inputs, ...outputs, ...scratch], each a
 * whole buffer or a range of one (graph views);
 * `uniformOffsets` are this plan's offsets inside `uniformBuffer`.
 */
export function createBindGroups(
  gpu: Gpu,
  plan: KernelPlan,
  ranges: readonly GPUBufferBinding[],
  uniformBuffer: GPUBuffer,
  uniformOffsets: readonly number[],
): { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; workgroups: readonly [number, number, number] }[] {
  return plan.dispatches.map((d, i) => {
    const pipeline = getPipeline(gpu, d.program);
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: uniformBuffer, offset: uniformOffsets[i]!, size: d.uniforms.byteLength } },
      ...d.tensors.map((t, b) => ({ binding: b + 1, resource: bindingOf(ranges, t) })),
    ];
    const bindGroup = gpu.device.createBindGroup({ label: d.program.name, layout: pipeline.getBindGroupLayout(0), entries });
    return { pipeline, bindGroup, workgroups: d.workgroups };
  });
}

/** Records prebuilt dispatches into one compute pass. */
export function encodeDispatches(
  pass: GPUComputePassEncoder,
  dispatches: readonly { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; workgroups: readonly [number, number, number] }[],
): void {
  for (const d of dispatches) {
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.bindGroup);
    pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
  }
}

/** Infos of tensors, for calling a kernel's outputs/plan with real tensors. */
export function infosOf(tensors: readonly Tensor[]): TensorInfo[] {
  return tensors.map((t) => ({ shape: t.shape, dtype: t.dtype }));
}

/**
 * Runs a kernel eagerly: checks, allocates outputs, one submit, and turns GPU errors into a
 * GpuError naming the kernel. On failure nothing is left allocated.
 */
export async function runKernel<O>(gpu: Gpu, kernel: Kernel<O>, inputs: readonly Tensor[], options: O): Promise<Tensor[]> {
  for (const [i, t] of inputs.entries()) {
    if (t.gpu !== gpu) throw new GpuError(kernel.name, `input ${i} (${t}) belongs to another Gpu`);
    if (t.disposed) throw new GpuError(kernel.name, `input ${i} of shape ${shapeString(t.shape)} was disposed`);
  }
  const inputInfos = infosOf(inputs);
  const outputInfos = kernel.outputs(inputInfos, options);
  // An empty result (a batch of 0) needs no dispatch; WebGPU would refuse the 4-byte buffers of
  // empty tensors where a shader reads whole vectors. (In-place kernels have no outputs at all.)
  if (outputInfos.length > 0 && outputInfos.every((o) => sizeOf(o.shape) === 0)) return outputInfos.map((o) => Tensor.empty(gpu, o.shape, o.dtype));
  const plan = kernel.plan(gpu, inputInfos, outputInfos, options);
  checkBindings(gpu, kernel.name, kernel.name, plan, [...inputInfos, ...outputInfos, ...(plan.scratch ?? [])], inputs.length, outputInfos.length);
  await preparePipelines(gpu, plan.dispatches.map((d) => d.program));
  const outputs: Tensor[] = [];
  const scratch: Tensor[] = [];
  let uniformBuffer: GPUBuffer | undefined;
  try {
    for (const o of outputInfos) outputs.push(Tensor.empty(gpu, o.shape, o.dtype));
    for (const s of plan.scratch ?? []) scratch.push(Tensor.empty(gpu, s.shape, s.dtype));
    const { data, offsets } = packUniforms(gpu, [plan]);
    await scopedWithPipelines(gpu, kernel.name, [plan], () => {
      uniformBuffer = gpu.createBuffer({ size: data.byteLength, usage: 0x40 | 0x08 /* UNIFORM | COPY_DST */ }, kernel.name);
      gpu.device.queue.writeBuffer(uniformBuffer, 0, data);
      const ranges = [...inputs, ...outputs, ...scratch].map((t) => ({ buffer: t.buffer }));
      const prepared = createBindGroups(gpu, plan, ranges, uniformBuffer, offsets[0]!);
      const encoder = gpu.device.createCommandEncoder({ label: kernel.name });
      const pass = encoder.beginComputePass({ label: kernel.name });
      encodeDispatches(pass, prepared);
      pass.end();
      gpu.submit([encoder.finish()]);
    });
    return outputs;
  } catch (err) {
    for (const t of outputs) t.dispose();
    throw err;
  } finally {
    for (const t of scratch) t.dispose();
    if (uniformBuffer) gpu.destroyBuffer(uniformBuffer);
  }
}

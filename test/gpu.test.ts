import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { GpuError, Tensor, kernels } from '../src/index.js';
import { useGpu } from './util/gpu.js';

const getGpu = useGpu();

describe('openGpu', () => {
  it('reports adapter info, features and limits', async () => {
    const gpu = await getGpu();
    expect(typeof gpu.info.vendor).toBe('string');
    expect(typeof gpu.info.description).toBe('string');
    expect(typeof gpu.info.isFallbackAdapter).toBe('boolean');
    expect(gpu.features).toBeInstanceOf(Set);
    for (const f of gpu.features) expect(gpu.device.features.has(f)).toBe(true);
    // Limits are raised to the adapter's maximum, so they are at least the WebGPU defaults.
    expect(gpu.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(134217728);
    expect(gpu.limits.maxComputeInvocationsPerWorkgroup).toBeGreaterThanOrEqual(256);
    expect(gpu.limits.maxComputeWorkgroupStorageSize).toBeGreaterThanOrEqual(16384);
  });

  it('turns an invalid dispatch into a GpuError naming the op', async () => {
    const gpu = await getGpu();
    const x = Tensor.from(gpu, [1, 2, 3, 4], [4]);
    const bad: kernels.Kernel<Record<string, never>> = {
      name: 'broken',
      outputs: (inputs) => [inputs[0]!],
      plan: () => ({
        dispatches: [
          {
            // A shader that does not compile: the error must come back as a GpuError, not a console warning.
            program: { name: 'broken', key: 'x', code: '@compute @workgroup_size(1) fn main() { let a = undefined_name; }', bindings: ['read', 'write'] },
            tensors: [0, 1],
            uniforms: kernels.uniforms(0),
            workgroups: [1, 1, 1],
          },
        ],
      }),
    };
    const before = gpu.stats();
    const err = await kernels.runKernel(gpu, bad, [x], {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GpuError);
    expect((err as GpuError).message).toMatch(/^broken: WebGPU validation error/);
    // The failed pipeline is not cached: the same program fails with its own error again.
    await expect(kernels.runKernel(gpu, bad, [x], {})).rejects.toThrow(/undefined_name/);
    // Nothing half-made is left behind.
    expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
    x.dispose();
  });

  it('rejects a dispatch larger than the device allows as a GpuError', async () => {
    const gpu = await getGpu();
    const x = Tensor.from(gpu, [1], [1]);
    const huge: kernels.Kernel<Record<string, never>> = {
      name: 'huge',
      outputs: (inputs) => [inputs[0]!],
      plan: () => ({
        dispatches: [
          {
            program: {
              name: 'huge',
              key: 'x',
              code: '@group(0) @binding(0) var<uniform> u: vec4u; @compute @workgroup_size(1) fn main() { _ = u; }',
              bindings: ['read', 'write'],
            },
            tensors: [0, 1],
            uniforms: kernels.uniforms(0),
            workgroups: [gpu.limits.maxComputeWorkgroupsPerDimension! + 1, 1, 1],
          },
        ],
      }),
    };
    await expect(kernels.runKernel(gpu, huge, [x], {})).rejects.toThrow(GpuError);
    x.dispose();
  });

  it('limits: lowers a max… limit as kernels see it, and refuses anything else', async () => {
    const { openGpu } = await import('../src/index.js');
    const small = await openGpu({ limits: { maxStorageBufferBindingSize: 4096 } });
    try {
      expect(small.limits.maxStorageBufferBindingSize).toBe(4096);
      // A kernel that binds a tensor whole says so before dispatch, with the sizes and the limit.
      const x = Tensor.from(small, new Float32Array(2048), [2, 1024]);
      await expect(kernels.softmax(small, x)).rejects.toThrow(
        /softmax: input 0 \(f32 \[2, 1024\], 8192 bytes\) is bound whole, above the device's maxStorageBufferBindingSize of 4096 bytes; softmax does not split it: call it on smaller pieces/,
      );
      x.dispose();
    } finally {
      small.close();
    }
    const gpu = await getGpu();
    const max = gpu.limits.maxStorageBufferBindingSize!;
    await expect(openGpu({ limits: { maxStorageBufferBindingSize: max + 1 } })).rejects.toThrow(/limits.maxStorageBufferBindingSize: expected a positive integer no larger than the adapter's/);
    await expect(openGpu({ limits: { minStorageBufferOffsetAlignment: 4 } })).rejects.toThrow(/limits.minStorageBufferOffsetAlignment/);
    await expect(openGpu({ limits: { maxBufferSize: 0 } })).rejects.toThrow(/got 0/);
  });

  it('keeps the errors of concurrent scoped() calls apart', async () => {
    const gpu = await getGpu();
    // A texture of 8192 x 8192 x 256 rgba32float texels (275 GB): an out-of-memory error, not a validation one.
    const outOfMemory = () => gpu.device.createTexture({ size: [8192, 8192, 256], format: 'rgba32float', usage: 4 /* TEXTURE_BINDING */ }).destroy();
    // In either order, the call that starts second must not pop the first one's out-of-memory scope.
    for (const failsFirst of [true, false]) {
      const big = () => gpu.scoped('too big', outOfMemory);
      const fine = () => gpu.scoped('fine', () => 1);
      const [first, second] = await Promise.allSettled(failsFirst ? [big(), fine()] : [fine(), big()]);
      const [bigResult, fineResult] = failsFirst ? [first, second] : [second, first];
      expect(bigResult.status).toBe('rejected');
      expect(String((bigResult as PromiseRejectedResult).reason)).toMatch(/too big: out of GPU memory/);
      expect(fineResult).toEqual({ status: 'fulfilled', value: 1 });
    }
  });

  it('close() lets the Node process exit by itself', () => {
    const script = `
      import { openGpu, Tensor } from './dist/index.js';
      const gpu = await openGpu();
      const t = Tensor.from(gpu, [1, 2, 3], [3]);
      console.log(Array.from(await t.read()).join(','));
      gpu.close();
    `;
    const started = Date.now();
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: process.cwd(),
      timeout: 30_000,
      encoding: 'utf8',
    });
    expect(child.error).toBeUndefined();
    expect(child.stdout.trim()).toBe('1,2,3');
    expect(child.status).toBe(0);
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it("resolves the kernel profile: 'auto' by the adapter, 'gpu' and 'cpu' as forced, anything else refused", async () => {
    const { openGpu, detectProfile } = await import('../src/index.js');
    const auto = await getGpu();
    expect(auto.profile).toBe(detectProfile(auto.info));
    expect(detectProfile({ ...auto.info, isFallbackAdapter: false, description: 'llvmpipe (LLVM 15.0.6, 256 bits)' })).toBe('cpu');
    expect(detectProfile({ ...auto.info, isFallbackAdapter: true, description: 'x' })).toBe('cpu');
    expect(detectProfile({ ...auto.info, isFallbackAdapter: false, description: 'NVIDIA GeForce RTX 4090', device: '' })).toBe('gpu');
    for (const profile of ['gpu', 'cpu'] as const) {
      const gpu = await openGpu({ profile });
      expect(gpu.profile).toBe(profile);
      expect(kernels.isCpuAdapter(gpu)).toBe(profile === 'cpu');
      gpu.close();
    }
    await expect(openGpu({ profile: 'fast' as 'gpu' })).rejects.toThrow(/openGpu.*profile must be 'auto', 'gpu' or 'cpu', got "fast"/);
  });

  it('refuses use after close', async () => {
    const { openGpu } = await import('../src/index.js');
    const gpu = await openGpu();
    gpu.close();
    expect(() => Tensor.from(gpu, [1], [1])).toThrow(/closed/);
  });
});

/** CPU time (user + system, ms) of this process's main thread so far; Linux only (/proc). */
function mainThreadCpuMs(): number | undefined {
  try {
    const fields = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (USER_HZ, 100 on Linux).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return undefined;
  }
}

describe('Gpu.settle: waiting for the GPU without a busy thread', () => {
  it('pollSleepMs: 0.25 on CPU adapters and 0 on GPUs by default; as given otherwise; bad values refused naming it', async () => {
    const { openGpu, detectProfile } = await import('../src/index.js');
    const auto = await getGpu();
    expect(auto.pollSleepMs).toBe(detectProfile(auto.info) === 'cpu' ? 0.25 : 0);
    const given = await openGpu({ pollSleepMs: 2 });
    expect(given.pollSleepMs).toBe(2);
    given.close();
    for (const bad of [-1, Number.NaN, 101, Infinity]) {
      await expect(openGpu({ pollSleepMs: bad })).rejects.toThrow(/openGpu: pollSleepMs: expected a number of milliseconds from 0 to 100, got/);
    }
  });

  it("passes on the operation's value or error, and timers still fire while it waits", async () => {
    const { openGpu } = await import('../src/index.js');
    const gpu = await openGpu({ pollSleepMs: 1 });
    try {
      await expect(gpu.settle(Promise.resolve(7))).resolves.toBe(7);
      await expect(gpu.settle(Promise.reject(new Error('lost')))).rejects.toThrow('lost');
      const fired: string[] = [];
      const slow = new Promise((resolve) => setTimeout(() => resolve('slow'), 60));
      setTimeout(() => fired.push('timer'), 5);
      // Two waits at once share one sleeping loop and both finish.
      const [a, b] = await Promise.all([gpu.settle(slow), gpu.settle(new Promise((r) => setTimeout(() => r('fast'), 10)))]);
      expect([a, b, fired]).toEqual(['slow', 'fast', ['timer']]);
    } finally {
      gpu.close();
    }
  });

  it('keeps the main thread mostly asleep while a CPU adapter works (Dawn alone polls without pause)', async (ctx) => {
    const gpu = await getGpu();
    ctx.skip(gpu.pollSleepMs === 0, 'a GPU adapter: waits poll as Dawn does, which costs the GPU nothing');
    ctx.skip(mainThreadCpuMs() === undefined, 'no per-thread CPU times here (/proc/self/task is Linux-only)');
    // About 2.4 GFLOP per product: tens to hundreds of milliseconds on lavapipe, mostly spent waiting.
    const a = Tensor.from(gpu, new Float32Array(512 * 768).fill(0.01), [512, 768]);
    const b = Tensor.from(gpu, new Float32Array(768 * 3072).fill(0.02), [768, 3072]);
    try {
      await (await kernels.runKernel(gpu, kernels.matmulKernel, [a, b], {}))[0]!.read();
      const cpu0 = mainThreadCpuMs()!;
      const wall0 = performance.now();
      for (let i = 0; i < 4; i++) {
        const [c] = await kernels.runKernel(gpu, kernels.matmulKernel, [a, b], {});
        expect((await c!.read())[0]).toBeCloseTo(768 * 0.01 * 0.02, 4);
        c!.dispose();
      }
      const wall = performance.now() - wall0;
      const cpu = mainThreadCpuMs()! - cpu0;
      // Busy polling would keep the main thread on the CPU for about the whole wall time.
      expect(cpu / wall, `main thread ${cpu} ms of CPU in ${wall.toFixed(0)} ms`).toBeLessThan(0.5);
    } finally {
      a.dispose();
      b.dispose();
    }
  });
});

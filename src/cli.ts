#!/usr/bin/env node
// ovgpu command line. `demo` opens the GPU, prints the adapter and checks a kernel against its CPU
// reference; later commands (detect, classify-regions) build on the same entry point.
import { openGpu, type OpenGpuOptions } from './gpu/index.js';
import { Tensor } from './tensor.js';
import { elementwise, elementwiseReference, type ElementwiseOptions } from './kernels/elementwise.js';

const USAGE = `usage: ovgpu <command> [options]
commands:
  demo            open the GPU, print the adapter, run kernels and check them against the CPU
options:
  --backend NAME  Dawn backend (vulkan, metal, d3d12, ...)
  --adapter NAME  Dawn adapter name (run with --adapter ? to list)`;

class UsageError extends Error {}

function parseGpuOptions(args: string[]): OpenGpuOptions {
  const options: OpenGpuOptions = {};
  for (let i = 0; i < args.length; i++) {
    const flag = args[i]!;
    const value = args[i + 1];
    if (flag === '--backend' || flag === '--adapter') {
      if (value === undefined) throw new UsageError(`${flag} needs a value`);
      options[flag === '--backend' ? 'backend' : 'adapter'] = value;
      i++;
    } else {
      throw new UsageError(`unknown option ${flag}`);
    }
  }
  return options;
}

async function demo(args: string[]): Promise<void> {
  const gpu = await openGpu(parseGpuOptions(args));
  try {
    const i = gpu.info;
    console.log(`adapter: ${i.vendor} ${i.architecture} ${i.device} — ${i.description}${i.isFallbackAdapter ? ' (software/fallback)' : ''}`);
    console.log(`features: ${[...gpu.features].filter((f) => ['shader-f16', 'subgroups', 'timestamp-query'].includes(f)).join(', ') || 'none of shader-f16, subgroups, timestamp-query'}`);
    const shape = [64, 768];
    const n = shape[0]! * shape[1]!;
    const data = Float32Array.from({ length: n }, (_, k) => Math.sin(k * 0.37) * 4);
    for (const options of [{ op: 'gelu' }, { op: 'quick_gelu' }, { op: 'l2norm' }] as ElementwiseOptions[]) {
      const x = Tensor.from(gpu, data, shape);
      const y = await elementwise(gpu, [x], options);
      const got = await y.read();
      const ref = elementwiseReference(data, shape, options);
      let maxErr = 0;
      for (let k = 0; k < n; k++) maxErr = Math.max(maxErr, Math.abs(got[k]! - ref[k]!));
      console.log(`${options.op.padEnd(10)} [${shape.join('×')}] max |gpu − cpu| = ${maxErr.toExponential(2)} ${maxErr < 1e-5 ? 'ok' : 'MISMATCH'}`);
      x.dispose();
      y.dispose();
      if (maxErr >= 1e-5) process.exitCode = 1;
    }
  } finally {
    gpu.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'demo':
      return demo(rest);
    case undefined:
    case '-h':
    case '--help':
      console.log(USAGE);
      return;
    default:
      throw new UsageError(`unknown command ${command}`);
  }
}

// Mesa's software Vulkan warns on every start without it.
process.env.XDG_RUNTIME_DIR ??= '/tmp';
main(process.argv.slice(2)).catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  console.error(`ovgpu: ${message}${err instanceof UsageError ? `\n${USAGE}` : ''}`);
  process.exitCode = 2;
});

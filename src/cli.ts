#!/usr/bin/env node
// ovgpu command line: `demo` (open the GPU, check kernels against the CPU), `detect` (OWL-ViT
// open-vocabulary detection), `classify-regions` (name given boxes with CLIP), `segment` (CaR
// segmentation) and the prompt-learning commands. Bad input ends with one line on stderr and exit
// code 2; other failures with one line and exit code 1.
import './platform/node.js';
import { openGpu } from './gpu/index.js';
import { Tensor } from './tensor.js';
import { elementwise, elementwiseReference, type ElementwiseOptions } from './kernels/elementwise.js';
import { parseArgs, UsageError } from './cli/args.js';
import { InputError } from './models/inputs.js';
import { SafetensorsError } from './io/safetensors.js';
import { TokenizerError } from './models/tokenizer/index.js';
import { PreprocessError } from './models/preprocess/index.js';
import { firstLine } from './cli/common.js';
import { detect, DETECT_USAGE } from './cli/detect.js';
import { classifyRegions, REGIONS_USAGE } from './cli/regions.js';
import { EVAL_ATTRIBUTES_USAGE, evalAttributesCommand, TRAIN_PROMPTS_USAGE, trainPromptsCommand } from './cli/prompts.js';
import { segment, SEGMENT_USAGE } from './cli/segment.js';

const USAGE = `usage: ovgpu <command> [options]
commands:
  detect <image…> --query TEXT…   find objects named by text (or --image-query) with OWL-ViT
  classify-regions <image> …      name given boxes with CLIP (categories and attributes)
  train-prompts --data …          learn category and attribute prompts from labelled boxes
  eval-attributes <pred> <ann>    attribute mAP (OVAD-style) and category accuracy of predictions
  segment <image> --query TEXT…   segment what the queries name with CaR (CLIP as RNN)
  demo                            open the GPU, print the adapter, check kernels against the CPU
options of every command:
  --backend NAME  Dawn backend (vulkan, metal, d3d12, ...)
  --adapter NAME  Dawn adapter name (run with --adapter ? to list)
  --help          this text, or a command's own with \`ovgpu <command> --help\`

${DETECT_USAGE}

${REGIONS_USAGE}

${TRAIN_PROMPTS_USAGE}

${EVAL_ATTRIBUTES_USAGE}

${SEGMENT_USAGE}`;

/** Opens the GPU; when --backend or --adapter was given and no device came of it, that is bad input naming them. */
async function gpuOpener(backend?: string, adapter?: string) {
  try {
    return await openGpu({ backend, adapter });
  } catch (err) {
    if (backend === undefined && adapter === undefined) throw err;
    const given = [backend !== undefined && `--backend ${backend}`, adapter !== undefined && `--adapter ${adapter}`].filter(Boolean).join(' ');
    throw new UsageError(`${given}: ${firstLine(err)}`, { cause: err });
  }
}

async function demo(argv: string[]): Promise<void> {
  const args = parseArgs(argv, { '--backend': 'string', '--adapter': 'string' });
  if (args.positional.length) throw new UsageError(`demo takes no arguments, got ${args.positional[0]}`);
  const gpu = await gpuOpener(args.strings.get('--backend'), args.strings.get('--adapter'));
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

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; usage: string }> = {
  demo: { run: demo, usage: USAGE },
  detect: { run: (argv) => detect(argv, gpuOpener), usage: DETECT_USAGE },
  'classify-regions': { run: (argv) => classifyRegions(argv, gpuOpener), usage: REGIONS_USAGE },
  'train-prompts': { run: (argv) => trainPromptsCommand(argv, gpuOpener), usage: TRAIN_PROMPTS_USAGE },
  'eval-attributes': { run: evalAttributesCommand, usage: EVAL_ATTRIBUTES_USAGE },
  segment: { run: (argv) => segment(argv, gpuOpener), usage: SEGMENT_USAGE },
};

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    console.log(USAGE);
    return;
  }
  const c = COMMANDS[command];
  if (!c) throw new UsageError(`unknown command ${command} (commands: ${Object.keys(COMMANDS).join(', ')}; see ovgpu --help)`);
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(c.usage);
    return;
  }
  await c.run(rest);
}

/**
 * Bad input (exit code 2): besides the CLI's own checks, input the models refuse in itself (a box
 * outside the image, an over-long query), an unreadable checkpoint, tokenizer or image, also when
 * a loader wrapped it.
 */
function isBadInput(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (e instanceof UsageError || e instanceof InputError || e instanceof SafetensorsError || e instanceof TokenizerError || e instanceof PreprocessError) return true;
  }
  return false;
}

// Mesa's software Vulkan warns on every start without it.
process.env.XDG_RUNTIME_DIR ??= '/tmp';
main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`ovgpu: ${firstLine(err)}${err instanceof UsageError ? ' (see ovgpu --help)' : ''}`);
  process.exitCode = isBadInput(err) ? 2 : 1;
});

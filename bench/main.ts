// `npm run bench -- <suite...> [--filter <substring>[|<substring>…]] [--quick] [--peers tfjs,ort-webgpu,ort-cpu,ort-web|all] [--no-peers] [--write|--no-write|--render]
//  [--backend <name>] [--adapter <name>] [--profile gpu|cpu] [--poll-sleep <ms>] [--browser] [--note <text>]`, bundled and started by scripts/bench.mjs.
// Suites: see SUITES below ('all' runs every one). --note adds a line to the results section
// (e.g. 'machine under load'). Results go to bench/RESULTS.md and
// bench/results/<suite>-<adapter>.json (not for --quick runs unless --write is given). --profile
// forces the kernels' settings (openGpu's profile); a profile other than the adapter's own is
// recorded as its own suite, '<suite>-profile-<name>', beside the default one. --browser runs the
// kernels suite in headless Chromium instead (bench/chromium.ts), recorded as 'kernels-chromium'
// with the same row labels, keyed by the browser's adapter (SwiftShader without a GPU); no peers.
// --poll-sleep sets openGpu's pollSleepMs (0: Dawn's own busy polling while waiting).
import { spawnSync } from 'node:child_process';
import '../src/platform/node.js';
import { detectProfile, openGpu, type GpuProfile } from '../src/gpu/gpu.js';
import type { Gpu } from '../src/gpu/gpu.js';
import { FULL, matches, peakFraction, QUICK, runCases, type BenchRow, type TimingSettings } from './harness.js';
import { measurePeak, remeasurePeak, PEAK_FULL, PEAK_QUICK, type Peak } from './peak.js';
import { loadTfjs, type TfjsPeer } from './peers.js';
import { loadOrt, ORT_PEERS, type OrtPeer, type OrtPeerName } from './ort.js';
import { renderAll, writeResults, type SuiteResult } from './results.js';
import type { KernelBenchCase } from './types.js';

export interface SuiteContext {
  gpu: Gpu;
  settings: TimingSettings;
  /** --quick: model suites use tiny stand-in models, so everything runs in seconds. */
  quick: boolean;
  peak: Peak;
  tfjs?: TfjsPeer;
  /** ONNX Runtime peers (--peers ort-webgpu,ort-cpu). */
  ort?: readonly OrtPeer[];
  /** Keep only rows whose '<kernel> <label>' contains this (case-insensitive). */
  filter?: string;
  log: (line: string) => void;
}

/** A suite's rows, notes (one line each) and an optional appendix (markdown after its table). */
// Suites import only types from this module: it has a top-level await, so a value import from a
// suite loaded here would wait for itself.
export type Suite = (ctx: SuiteContext) => Promise<{ rows: BenchRow[]; notes?: string[]; appendix?: string[] }>;


/** Every suite by name. */
export const SUITES: Record<string, Suite> = {
  async kernels(ctx) {
    const registry: Record<string, KernelBenchCase[]> = { ...(await import('./kernels/index.js')) };
    const cases = Object.values(registry).flat().filter((c) => matches(ctx.filter, c.kernel.name, c.label));
    return { rows: await runCases(ctx.gpu, cases, ctx, ctx.log) };
  },
  graph: async (ctx) => (await import('./suites/graph.js')).graphSuite(ctx),
  grad: async (ctx) => (await import('./suites/grad.js')).gradSuite(ctx),
  clip: async (ctx) => (await import('./suites/clip.js')).clipSuite(ctx),
  owlvit: async (ctx) => (await import('./suites/owlvit.js')).owlvitSuite(ctx),
  owlv2: async (ctx) => (await import('./suites/owlvit.js')).owlv2Suite(ctx),
  prompts: async (ctx) => (await import('./suites/prompts.js')).promptsSuite(ctx),
  car: async (ctx) => (await import('./suites/car.js')).carSuite(ctx),
};

interface Args {
  suites: string[];
  filter?: string;
  quick: boolean;
  /** Peer names: 'tfjs' and ORT_PEERS. */
  peers: string[];
  write?: boolean;
  backend?: string;
  adapter?: string;
  profile?: GpuProfile;
  /** --poll-sleep: openGpu's pollSleepMs. */
  pollSleepMs?: number;
  notes: string[];
  /** --render: rewrite RESULTS.md's sections from bench/results/*.json, run nothing. */
  render?: boolean;
  /** --browser: the kernels suite in headless Chromium. */
  browser?: boolean;
}

function parseArgs(argv: string[]): Args {
  const ALL_PEERS = ['tfjs', ...ORT_PEERS];
  const args: Args = { suites: [], quick: false, peers: ALL_PEERS, notes: [] };
  const value = (i: number, flag: string) => {
    const v = argv[i];
    if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--filter') args.filter = value(++i, a);
    else if (a === '--quick') args.quick = true;
    else if (a === '--no-peers') args.peers = [];
    else if (a === '--peers') {
      const list = value(++i, a).split(',').filter(Boolean);
      const names = list.includes('all') ? ALL_PEERS : list;
      for (const p of names) if (!ALL_PEERS.includes(p)) throw new Error(`--peers: unknown peer ${JSON.stringify(p)}; peers: ${ALL_PEERS.join(', ')}, all`);
      args.peers = names;
    }
    else if (a === '--render') args.render = true;
    else if (a === '--browser') args.browser = true;
    else if (a === '--write') args.write = true;
    else if (a === '--no-write') args.write = false;
    else if (a === '--backend') args.backend = value(++i, a);
    else if (a === '--adapter') args.adapter = value(++i, a);
    else if (a === '--note') args.notes.push(value(++i, a));
    else if (a === '--profile') {
      const p = value(++i, a);
      if (p !== 'gpu' && p !== 'cpu') throw new Error(`--profile must be gpu or cpu, got ${JSON.stringify(p)}`);
      args.profile = p;
    }
    else if (a === '--poll-sleep') args.pollSleepMs = Number(value(++i, a));
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else args.suites.push(a);
  }
  if (args.suites.includes('all')) args.suites = Object.keys(SUITES);
  if (args.render) {
    if (args.suites.length) throw new Error('--render runs no suite: name none');
    return args;
  }
  if (args.suites.length === 0) throw new Error(`name a suite: ${[...Object.keys(SUITES), 'all'].join(', ')}`);
  for (const s of args.suites) if (!SUITES[s]) throw new Error(`unknown suite ${JSON.stringify(s)}; suites: ${[...Object.keys(SUITES), 'all'].join(', ')}`);
  if (args.browser && args.suites.some((s) => s !== 'kernels')) throw new Error('--browser runs the kernels suite only');
  return args;
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    console.error('usage: npm run bench -- <suite...|all> [--filter <substring>[|<substring>…]] [--quick] [--peers tfjs,ort-webgpu,ort-cpu,ort-web|all] [--no-peers] [--write|--no-write|--render] [--backend <name>] [--adapter <name>] [--profile gpu|cpu] [--poll-sleep <ms>] [--browser] [--note <text>]');
    return 2;
  }
  if (args.render) {
    console.log(`bench/RESULTS.md: ${renderAll('bench')} sections rendered from bench/results/*.json`);
    return 0;
  }
  const settings = args.quick ? QUICK : FULL;
  const write = args.write ?? !args.quick;
  if (args.browser) return browserMain(args, settings, write);
  const gpu = await openGpu({ backend: args.backend, adapter: args.adapter, profile: args.profile, pollSleepMs: args.pollSleepMs });
  const suffix = gpu.profile === detectProfile(gpu.info) ? '' : `-profile-${gpu.profile}`;
  let failed = false;
  try {
    const log = (line: string) => console.log(line);
    log(`adapter: ${gpu.info.description} (${gpu.info.vendor}, ${gpu.info.architecture}); profile ${gpu.profile}; timing: ${gpu.features.has('timestamp-query') ? 'timestamp queries' : 'wall clock'}; waits sleep ${gpu.pollSleepMs} ms between polls${args.quick ? ' (quick: numbers are not meaningful)' : ''}`);
    const peakSizes = args.quick ? PEAK_QUICK : PEAK_FULL;
    const describePeak = (p: Peak) => `f32 FMA ${p.gflops.toPrecision(3)} GFLOP/s, copy ${p.gbps.toPrecision(3)} GB/s (shader ${p.shaderCopyGbps.toPrecision(3)}, copyBufferToBuffer ${p.bufferCopyGbps.toPrecision(3)})`;
    let peak = await measurePeak(gpu, settings, peakSizes);
    log(`peak: ${describePeak(peak)}`);
    let tfjs: TfjsPeer | undefined;
    const ort: OrtPeer[] = [];
    const notes = [...args.notes];
    for (const name of args.peers.filter((p): p is OrtPeerName => p !== 'tfjs')) {
      try {
        ort.push(await loadOrt(name, gpu));
        log(`peer: ${ort.at(-1)!.description}`);
      } catch (err) {
        notes.push(`${name} peer unavailable: ${(err as Error).message}`);
        log(`peer ${name}: unavailable (${(err as Error).message})`);
      }
    }
    if (args.peers.includes('tfjs')) {
      try {
        tfjs = await loadTfjs(gpu);
        log(`peer: TF.js ${tfjs.version} WebGPU backend on our GPUDevice`);
      } catch (err) {
        notes.push(`TF.js peers unavailable: ${(err as Error).message}`);
        log(`peer: unavailable (${(err as Error).message})`);
      }
    }
    for (const suite of args.suites) {
      log(`\n# ${suite}`);
      const { rows: measured, notes: suiteNotes = [], appendix } = await SUITES[suite]!({ gpu, settings, quick: args.quick, peak, tfjs, ort, filter: args.filter, log });
      failed ||= measured.some((r) => r.error);
      if (!write) continue;
      // The section's peak is the best of those measured before and after its rows; their % of
      // peak is against it (the rows logged above used the peak known when they ran).
      const best = (peak = await remeasurePeak(gpu, settings, peakSizes));
      log(`peak, best of before and after this suite: ${describePeak(best)}`);
      const rows = measured.map((r) => (r.peak ? { ...r, peak: peakFraction(r.gflops, r.gbps, best) } : r));
      if (rows.length === 0) {
        log(`(no rows${args.filter ? ` match --filter ${args.filter}` : ''}; nothing written)`);
        continue;
      }
      record(
        {
          suite: suite + suffix,
          adapter: gpu.info,
          timing: timingOf(gpu.features.has('timestamp-query') ? 'timestamp' : 'wall', settings, gpu.pollSleepMs),
          peak: best,
          peer: tfjs ? `TF.js ${tfjs.version} (tfjs-backend-webgpu) in the same process on the same GPUDevice` : undefined,
          peers: Object.fromEntries(ort.map((p) => [p.name, p.description])),
          rows,
          notes: [...notes, ...suiteNotes],
          appendix,
        },
        args,
        log,
      );
    }
    // README's headline table follows the results it was generated from (scripts/headline.mjs).
    if (write) spawnSync(process.execPath, ['scripts/headline.mjs'], { stdio: 'inherit' });
  } finally {
    gpu.close();
  }
  return failed ? 1 : 0;
}

const timingOf = (source: 'timestamp' | 'wall', settings: TimingSettings, pollSleepMs?: number): SuiteResult['timing'] => ({ source, minSeconds: settings.minSeconds, trials: settings.trials, pollSleepMs });

/** Writes a suite's results (dated now), merged into the previous ones for a filtered run. */
function record(result: Omit<SuiteResult, 'date'>, args: Args, log: (line: string) => void): void {
  const written = writeResults('bench', { ...result, date: new Date().toISOString() }, { merge: !!args.filter });
  log(`wrote ${written.markdown} and ${written.json}`);
}

/** --browser: the kernels suite in headless Chromium, recorded as 'kernels-chromium[-profile-<name>]'. */
async function browserMain(args: Args, settings: TimingSettings, write: boolean): Promise<number> {
  const log = (line: string) => console.log(line);
  const { kernelsInChromium } = await import('./chromium.js');
  const r = await kernelsInChromium({ settings, quick: args.quick, filter: args.filter, profile: args.profile }, log);
  if (r.rows.length === 0) log(`(no rows${args.filter ? ` match --filter ${args.filter}` : ''}; nothing written)`);
  else if (write) {
    const suffix = r.profile === detectProfile(r.adapter) ? '' : `-profile-${r.profile}`;
    const timing = r.source === 'timestamp' ? 'timestamp queries' : `wall clock (${r.browser} offers no 'timestamp-query' on this adapter)`;
    const where = `${r.browser} headless (puppeteer-core, --enable-unsafe-webgpu): the kernels suite's cases run in a page (bench/page.ts), timed with ${timing}; no peers (they run in Node only)`;
    record({ suite: `kernels-chromium${suffix}`, adapter: r.adapter, timing: timingOf(r.source, settings), peak: r.peak, rows: r.rows, notes: [where, ...args.notes] }, args, log);
  }
  return r.rows.some((row) => row.error) ? 1 : 0;
}

process.exitCode = await main();

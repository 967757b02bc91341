// Seeded loader fuzz: hundreds of mutated checkpoints (headers, offsets, dtypes, shapes, truncations,
// config.json fields, shard indexes, NaN) of clip_tiny (HF folder, two shards, OpenAI names) and
// owlvit_tiny, each loaded by the model's loader in a worker process that is killed if a case
// outlives its timeout. Every case must
// end in a GpuError naming the file (and the tensor or config field it broke) or in a load whose
// weights are bit-identical to the unmutated checkpoint's: no crash, no hang, no silent acceptance.
import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type BuildOptions, type PluginBuild } from 'esbuild';
import { afterAll, expect, it } from 'vitest';
import { FIXTURES } from '../util/fixtures.js';
import { MODELS, type FuzzReport } from './fuzz/protocol.js';

const SEED = Number(process.env.OVGPU_FUZZ_SEED ?? 20261202);
const CASES = Number(process.env.OVGPU_FUZZ_CASES ?? 330);
/** Per case; a load of these tiny models takes well under a second. */
const CASE_TIMEOUT_MS = 20_000;

const dir = mkdtempSync(join(tmpdir(), 'ovgpu-fuzz-bundle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Bundles the worker; runtime packages stay external, resolved to absolute paths from here. */
async function bundleChild(): Promise<string> {
  // The build's own options (a .mjs without types, hence the cast).
  const { nodeBundle } = (await import('../../scripts/esbuild-options.mjs' as string)) as { nodeBundle: BuildOptions & { external: string[] } };
  const require = createRequire(import.meta.url);
  const outfile = join(dir, 'child.mjs');
  await build({
    ...nodeBundle,
    entryPoints: [fileURLToPath(new URL('./fuzz/child.ts', import.meta.url))],
    outfile,
    external: [],
    plugins: [
      {
        name: 'absolute-externals',
        setup(b: PluginBuild) {
          b.onResolve({ filter: new RegExp(`^(${nodeBundle.external.join('|').replace(/[/@]/g, '\\$&')})$`) }, (args) => ({ path: require.resolve(args.path), external: true }));
        },
      },
    ],
  });
  return outfile;
}

/** Sends one message and waits for the reply, or kills the worker after `ms`. */
function ask<T>(child: ChildProcess, msg: object, ms: number): Promise<T | 'timeout' | 'exit'> {
  return new Promise((resolve) => {
    const onMessage = (m: T) => finish(m);
    const onExit = () => finish('exit');
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish('timeout');
    }, ms);
    function finish(v: T | 'timeout' | 'exit') {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(v);
    }
    child.on('message', onMessage);
    child.on('exit', onExit);
    child.send(msg);
  });
}

it(`${CASES} mutated checkpoints (seed ${SEED}): each a named GpuError or an identical load, none over ${CASE_TIMEOUT_MS / 1000} s`, async () => {
  const child = fork(await bundleChild(), [], { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  try {
    expect(await ask(child, { init: { seed: SEED, fixtures: FIXTURES } }, 120_000), `worker start: ${stderr}`).toEqual({ ready: true });
    const reports: FuzzReport[] = [];
    const problems: string[] = [];
    for (let index = 0; index < CASES; index++) {
      const model = MODELS[index % MODELS.length]!;
      const r = await ask<FuzzReport>(child, { index, model }, CASE_TIMEOUT_MS);
      if (r === 'timeout' || r === 'exit') {
        // The worker is gone: report the case (rerun with its seed) and stop.
        problems.push(`case ${index} (${model}): ${r === 'timeout' ? `no answer within ${CASE_TIMEOUT_MS} ms` : `worker exited`}; stderr: ${stderr}`);
        break;
      }
      reports.push(r);
      const label = `case ${index} ${r.model} ${r.kind}: ${r.what}`;
      if (r.outcome === 'error') {
        if (!r.isGpuError) problems.push(`${label}: not a GpuError: ${r.error}`);
        if (r.expect === 'same' || r.expect === 'loads') problems.push(`${label}: should load, got ${r.error}`);
        const missing = r.mentions.filter((m) => !r.error!.includes(m));
        if (missing.length) problems.push(`${label}: the error does not name ${missing.join(', ')}: ${r.error}`);
      } else {
        if (r.expect === 'error') problems.push(`${label}: loaded, should have failed`);
        if (r.expect !== 'loads' && !r.same) problems.push(`${label}: loaded different weights (silent acceptance)`);
      }
    }
    const byKind = new Map<string, { errors: number; loads: number }>();
    for (const r of reports) {
      const k = byKind.get(r.kind) ?? { errors: 0, loads: 0 };
      k[r.outcome === 'error' ? 'errors' : 'loads']++;
      byKind.set(r.kind, k);
    }
    const slowest = reports.reduce((a, b) => (b.ms > a.ms ? b : a), reports[0]!);
    console.log(`${reports.length} cases: ${[...byKind].map(([k, v]) => `${k} ${v.errors} errors/${v.loads} loads`).join(', ')}; slowest ${slowest?.ms.toFixed(0)} ms (case ${slowest?.index}, ${slowest?.kind})`);
    expect(problems).toEqual([]);
    expect(reports.length).toBe(CASES);
    // The mutations reach every kind, and both outcomes happen.
    for (const kind of ['dtype', 'shape', 'offsets', 'drop', 'rename', 'nonfinite', 'truncate', 'append', 'header-length', 'flip', 'benign', 'config', 'index']) expect(byKind.get(kind)?.errors ?? 0, kind).toBeGreaterThan(kind === 'benign' ? -1 : 0);
    expect(byKind.get('benign')?.loads ?? 0).toBeGreaterThan(0);
    await ask(child, { done: true }, 10_000);
  } finally {
    child.kill('SIGKILL');
  }
  // ~60 s on the 2-core CI machine; each case has its own timeout above.
}, 900_000);

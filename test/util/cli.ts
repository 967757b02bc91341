// The built command line (dist/cli.js, which `npm test` builds first), run as a user runs it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const ROOT = join(__dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli.js');
export const SAMPLE = join(ROOT, 'assets', 'sample.png');
/** Mesa warns on every process start without XDG_RUNTIME_DIR. */
export const CLI_ENV = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' };

/** Runs `ovgpu ...args` to completion (5 minutes at most). */
export function ovgpu(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: CLI_ENV, timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** For beforeAll: a missing build is a failure, not a skip. */
export function requireBuiltCli(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build (npm test does)`);
}

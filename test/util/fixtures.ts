import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { decodeSafetensors, type HostTensor } from '../../src/io/safetensors.js';

/** ../shared/fixtures beside the project root (see its README). */
export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'shared', 'fixtures');

export function fixturePath(...parts: string[]): string {
  const p = join(FIXTURES, ...parts);
  if (!existsSync(p)) throw new Error(`fixture ${p} not found: tests expect ../shared/fixtures beside the project`);
  return p;
}

const cache = new Map<string, Map<string, HostTensor>>();

/** All tensors of a fixture .safetensors file, read once per test process. */
export function loadFixture(...parts: string[]): Map<string, HostTensor> {
  const p = fixturePath(...parts);
  let m = cache.get(p);
  if (!m) cache.set(p, (m = decodeSafetensors(readFileSync(p), p)));
  return m;
}

/** One tensor of a fixture, failing clearly when it is missing. */
export function fixtureTensor(file: Map<string, HostTensor>, name: string): HostTensor {
  const t = file.get(name);
  if (!t) throw new Error(`fixture tensor ${name} not found`);
  return t;
}

import { existsSync } from 'node:fs';
import { openCheckpoint } from '../../io/safetensors.js';
import type { WeightReader } from './weights.js';

/** A WeightReader over a .safetensors file, a sharded index, or a folder holding either. */
export function openWeightReader(pathOrDir: string): WeightReader & { close(): void } {
  if (!existsSync(pathOrDir)) throw new Error(`${pathOrDir}: no such file or folder`);
  const f = openCheckpoint(pathOrDir);
  return {
    path: f.path,
    names: () => f.names,
    shape: (n) => (f.has(n) ? f.entry(n).shape : undefined),
    read: (n) => {
      const t = f.get(n);
      return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
    },
    close: () => f.close(),
  };
}

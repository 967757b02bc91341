import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile } from '../../io/safetensors.js';
import type { WeightReader } from './weights.js';

/** A WeightReader over a .safetensors file, or a folder holding model.safetensors. */
export function openWeightReader(pathOrDir: string): WeightReader & { close(): void } {
  if (!existsSync(pathOrDir)) throw new Error(`${pathOrDir}: no such file or folder`);
  const file = statSync(pathOrDir).isDirectory() ? join(pathOrDir, 'model.safetensors') : pathOrDir;
  if (!existsSync(file)) throw new Error(`${pathOrDir}: no model.safetensors in this folder`);
  const f = SafetensorsFile.open(file);
  return {
    path: file,
    names: () => [...f.entries.keys()],
    shape: (n) => f.entries.get(n)?.shape,
    read: (n) => {
      const t = f.get(n);
      return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
    },
    close: () => f.close(),
  };
}

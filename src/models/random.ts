// Writes random-weight model folders to disk (Node); the weights themselves are randomWeights.ts's.
import { closeSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { ClipConfig } from './clip/config.js';
import { randomModelChunks, type RandomModelKind } from './randomWeights.js';

export * from './randomWeights.js';

/**
 * Writes config.json, model.safetensors and (when the text vocabulary is the byte-level one)
 * vocab.json + merges.txt into `dir`, chunk by chunk (never a whole file in memory). Files appear
 * atomically (written beside, then renamed), so an interrupted run never leaves a half-written
 * model that looks complete.
 */
export function writeRandomModel(dir: string, kind: RandomModelKind, config: ClipConfig, seed = 1): { bytes: number } {
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.partial-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  let bytes = 0;
  const files = randomModelChunks(kind, config, seed);
  for (const [name, chunks] of files) {
    const fd = openSync(join(tmp, name), 'w');
    try {
      for (const c of chunks) {
        writeSync(fd, c);
        if (name === 'model.safetensors') bytes += c.length;
      }
    } finally {
      closeSync(fd);
    }
  }
  // config.json last (randomModelChunks lists it last): loaders look for it first.
  for (const name of files.keys()) renameSync(join(tmp, name), join(dir, name));
  rmSync(tmp, { recursive: true, force: true });
  return { bytes };
}

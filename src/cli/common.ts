// Checks and helpers shared by the CLI commands: everything here runs before the GPU is opened,
// so bad input fails fast with one line.
import { existsSync, statSync, writeFileSync } from 'node:fs';
import sharp from 'sharp';
import { UsageError } from './args.js';

/** Fails unless the path is a readable image; returns its upright size. */
export async function checkImage(path: string): Promise<{ width: number; height: number }> {
  if (!existsSync(path)) throw new UsageError(`image ${path} not found`);
  try {
    const m = await sharp(path).metadata();
    if (!m.width || !m.height) throw new Error('no size');
    const swap = (m.orientation ?? 1) >= 5;
    return swap ? { width: m.height, height: m.width } : { width: m.width, height: m.height };
  } catch (err) {
    throw new UsageError(`cannot read image ${path}: ${firstLine(err)}`);
  }
}

/** Fails unless `dir` is a model folder (holding config.json; the loaders check the weights). */
export function checkModelDir(dir: string): void {
  if (!existsSync(dir)) throw new UsageError(`model folder ${dir} not found`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`model ${dir} is not a folder (expected config.json + model.safetensors)`);
  if (!existsSync(`${dir}/config.json`)) throw new UsageError(`model folder ${dir} has no config.json`);
}

/** An error's first line; an error without a message (a DOMException from WebGPU) is named by its type. */
export function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message.trim() || `${err.name} (no message)` : String(err);
  return message.split('\n')[0]!;
}

/** Writes JSON to a file, or to stdout for '-'. */
export function writeJson(path: string, value: unknown): void {
  const text = `${JSON.stringify(value, null, 2)}\n`;
  if (path === '-') process.stdout.write(text);
  else writeFileSync(path, text);
}

/** Output file for image i of n: `out` itself for one image, else `out` with -1, -2, … before the extension. */
export function numberedPath(out: string, i: number, n: number): string {
  if (n === 1) return out;
  const dot = out.lastIndexOf('.');
  return dot > out.lastIndexOf('/') ? `${out.slice(0, dot)}-${i + 1}${out.slice(dot)}` : `${out}-${i + 1}`;
}

export const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits;

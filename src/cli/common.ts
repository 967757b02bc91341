// Checks and helpers shared by the CLI commands: everything here runs before the GPU is opened,
// so bad input fails fast with one line.
import { closeSync, existsSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import type { ClipConfig } from '../models/clip/config.js';
import { hfConfigJson, writeRandomModel, type RandomModelKind } from '../models/random.js';
import { withProgress } from './progress.js';
import { ClipTokenizer, TOKENIZER_FILES } from '../models/tokenizer/index.js';
import { encodeQuery } from '../models/inputs.js';
import { UsageError } from './args.js';

/**
 * Fails unless the path is an image that decodes completely (a truncated file fails here, not after
 * the model has loaded); returns its upright size.
 */
export async function checkImage(path: string): Promise<{ width: number; height: number }> {
  if (path.trim() === '') throw new UsageError('an image path is empty');
  if (!existsSync(path)) throw new UsageError(`image ${path} not found`);
  if (!statSync(path).isFile()) throw new UsageError(`image ${path} is not a file`);
  try {
    const { info } = await sharp(path).rotate().raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height };
  } catch (err) {
    throw new UsageError(`cannot read image ${path}: ${firstLine(err)}`);
  }
}

/** Fails unless `dir` is a model folder: config.json, the weights and, when text is read, the tokenizer files. */
export function checkModelDir(dir: string, needsTokenizer = true): void {
  if (!existsSync(dir)) throw new UsageError(`model folder ${dir} not found`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`model ${dir} is not a folder (expected config.json + model.safetensors)`);
  const has = (f: string) => existsSync(join(dir, f));
  if (!has('config.json')) throw new UsageError(`model folder ${dir} has no config.json`);
  if (!has('model.safetensors') && !has('model.safetensors.index.json')) throw new UsageError(`model folder ${dir} has no weights (model.safetensors or model.safetensors.index.json)`);
  if (needsTokenizer && !TOKENIZER_FILES.some(has)) throw new UsageError(`model folder ${dir} has no tokenizer files (one of ${TOKENIZER_FILES.join(', ')})`);
}

/**
 * The model folder's config.json as `parse` reads (and checks) it: a malformed or wrong-typed
 * config fails before the model loads, naming the file.
 */
export function checkConfig<T>(dir: string, parse: (json: Record<string, unknown>) => T): T {
  const path = join(dir, 'config.json');
  try {
    return parse(JSON.parse(readFileSync(path, 'utf8')));
  } catch (err) {
    throw new UsageError(`${path}: ${firstLine(err)}`);
  }
}

/**
 * The model folder's tokenizer, with every text the command will embed checked against the
 * model's context length (`undefined`: the model has no text tower): an over-long query fails
 * before the model loads.
 */
export async function checkTexts(dir: string, contextLength: number | undefined, texts: readonly string[], truncate: boolean): Promise<ClipTokenizer> {
  if (contextLength === undefined) throw new UsageError(`${join(dir, 'config.json')}: the model has no text tower`);
  let tokenizer: ClipTokenizer;
  try {
    tokenizer = await ClipTokenizer.load(dir);
  } catch (err) {
    throw new UsageError(`model folder ${dir}: ${firstLine(err)}`);
  }
  for (const text of texts) encodeQuery('--query', tokenizer, text, contextLength, truncate);
  return tokenizer;
}

/**
 * Fails unless `path` can be written: its folder exists and takes a new file (tried by creating
 * one), and the path itself is not a folder. Run before any model work.
 */
export function checkOutput(flag: string, path: string): void {
  const dir = dirname(path);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${flag} ${path}: folder ${dir} does not exist`);
  if (existsSync(path) && statSync(path).isDirectory()) throw new UsageError(`${flag} ${path} is a folder`);
  const probe = tempPath(path);
  try {
    closeSync(openSync(probe, 'wx'));
    rmSync(probe, { force: true });
  } catch (err) {
    throw new UsageError(`${flag} ${path} cannot be written: ${firstLine(err)}`);
  }
}

/** Fails if two outputs would be written to the same file (the last would silently replace the first). */
export function checkDistinctOutputs(outputs: readonly { flag: string; path: string }[]): void {
  const seen = new Map<string, string>();
  for (const { flag, path } of outputs) {
    const key = resolve(path);
    const first = seen.get(key);
    if (first) throw new UsageError(`${first} and ${flag} both write ${path}`);
    seen.set(key, flag);
  }
}

function tempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
}

/**
 * Output files written under temporary names beside their targets and renamed only when all of them
 * were written: a failed run leaves no half-written JSON or PNG (and no temporary file).
 */
export class OutputFiles {
  #pending: { temp: string; path: string }[] = [];

  /** Where to write `path` for now. */
  temp(path: string): string {
    const temp = tempPath(path);
    this.#pending.push({ temp, path });
    return temp;
  }

  /** Renames every file written into place. */
  commit(): void {
    for (const { temp, path } of this.#pending.splice(0)) renameSync(temp, path);
  }

  /** Removes the temporary files not committed. */
  discard(): void {
    for (const { temp } of this.#pending.splice(0)) rmSync(temp, { force: true });
  }
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

/** The package root (holding package.json), from this module's location in dist/ or src/. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/**
 * A random-weight demo model's folder (.cache/<name>, else the temp folder), written on first use
 * (seeded: the same everywhere); a folder from another version of the model is rewritten.
 */
export async function demoModel(name: string, kind: RandomModelKind, config: ClipConfig): Promise<string> {
  for (const dir of [join(packageRoot(), '.cache', name), join(tmpdir(), `ovgpu-${name}`)]) {
    const file = join(dir, 'config.json');
    if (existsSync(file) && readFileSync(file, 'utf8') === JSON.stringify(hfConfigJson(kind, config, 1), null, 2)) return dir;
    try {
      await withProgress(`writing the random-weight demo model to ${relative(process.cwd(), dir) || dir} (once)`, async () => writeRandomModel(dir, kind, config, 1));
      return dir;
    } catch {
      // read-only install: try the next place
    }
  }
  throw new Error('cannot write the demo model (no writable .cache or temp folder)');
}

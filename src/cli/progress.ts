// Progress on stderr while something slow runs (weight loading): on a terminal one line that
// updates with the elapsed time and is erased if the work fails, otherwise one line when it ends.
// A failure thus leaves only the error's own line.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export async function withProgress<T>(what: string, work: () => Promise<T>): Promise<T> {
  const start = performance.now();
  const elapsed = () => `${((performance.now() - start) / 1000).toFixed(1)} s`;
  const tty = process.stderr.isTTY;
  const timer = tty ? setInterval(() => process.stderr.write(`\r${what}… ${elapsed()}`), 200) : undefined;
  if (tty) process.stderr.write(`${what}…`);
  try {
    const result = await work();
    process.stderr.write(`${tty ? '\r\x1b[K' : ''}${what}: done in ${elapsed()}\n`);
    return result;
  } catch (err) {
    if (tty) process.stderr.write('\r\x1b[K');
    throw err;
  } finally {
    clearInterval(timer);
  }
}

/** Total size of the .safetensors files in a folder, e.g. "151 MB" (for progress lines). */
export function weightsSize(dir: string): string {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return '';
  const bytes = readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .reduce((s, f) => s + statSync(join(dir, f)).size, 0);
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(0)} MB` : `${(bytes / 1e3).toFixed(0)} kB`;
}

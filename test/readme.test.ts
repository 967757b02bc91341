import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

// Every README example that imports 'ovgpu' and closes its GPU is a runnable program: run each
// against the build, as a user would, so the documentation cannot drift from the code.
const readme = readFileSync('README.md', 'utf8');
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!).filter((code) => code.includes("from 'ovgpu'") && code.includes('gpu.close()'));
const dist = pathToFileURL(resolve('dist/index.js')).href;

describe('README examples', () => {
  it('has runnable examples', () => expect(blocks.length).toBeGreaterThan(0));
  blocks.forEach((code, i) => {
    const title = code.split('\n').find((l) => l.includes('kernels.') || l.includes('new ') || l.includes('.load(')) ?? `block ${i}`;
    it(`runs: ${title.trim().slice(0, 60)}`, () => {
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', code.replaceAll("from 'ovgpu'", `from '${dist}'`)], { encoding: 'utf8', timeout: 60_000 });
      expect(child.stderr.split('\n').filter((l) => l && !l.startsWith('Warning: max')).join('\n')).toBe('');
      expect(child.status).toBe(0);
    });
  });
});

import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

// Every README example that imports 'ovgpu' and closes its GPU is a runnable program: run each
// against the build, as a user would, so the documentation cannot drift from the code. What each
// `console.log(…); // comment` prints is compared with the numbers in its comment (and in comment
// lines right below it), in order:
// - `…` or `...` skips printed numbers up to the next number of the comment; a comment that does
//   not end with one must account for every number printed;
// - words, quoted strings and parenthesised asides `(…)` after a space are not compared, and a
//   comment without numbers (`// CPU reference`) is not checked;
// - tolerance: half a unit in the last written digit (0.8413 matches 0.84134); an integer matches
//   within 1e-4 of its magnitude (100 matches 99.99999, 0 matches 1e-7).
const readme = readFileSync('README.md', 'utf8');
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!).filter((code) => code.includes("from 'ovgpu'") && code.includes('gpu.close()'));
const dist = pathToFileURL(resolve('dist/index.js')).href;

/** A number to compare, or a skip. */
type Token = { skip: true } | { skip: false; value: number; text: string };

const TOKEN = /…|\.\.\.|(?<![\w.])-?(?:\d+(?:\.\d+)?|\.\d+)(?:e[+-]?\d+)?(?![\w.])/gi;

function tokens(text: string): Token[] {
  const plain = text.replace(/'[^']*'|"[^"]*"/g, ' ');
  return [...plain.matchAll(TOKEN)].map(([t]) => (t === '…' || t === '...' ? { skip: true } : { skip: false, value: Number(t), text: t }));
}

function matches(got: number, want: { value: number; text: string }): boolean {
  const decimals = /\.(\d+)/.exec(want.text.split(/e/i)[0]!)?.[1]!.length ?? 0;
  const exponent = Number(/e([+-]?\d+)$/i.exec(want.text)?.[1] ?? 0);
  const tol = decimals > 0 ? 0.5 * 10 ** (exponent - decimals) : 1e-4 * Math.max(1, Math.abs(want.value));
  return Math.abs(got - want.value) <= tol * (1 + 1e-9);
}

/** Why the printed numbers do not match the comment, or undefined when they do. */
function compare(printed: string, comment: string): string | undefined {
  const want = tokens(comment.replace(/(^|\s)\([^()]*\)/g, '$1'));
  if (!want.some((t) => !t.skip)) return undefined;
  const got = tokens(printed.replace(/\b(\w+Array)\(\d+\)/g, '$1')).filter((t) => !t.skip) as { value: number }[];
  let at = 0;
  let skipping = false;
  for (const w of want) {
    if (w.skip) {
      skipping = true;
      continue;
    }
    if (skipping) {
      while (at < got.length && !matches(got[at]!.value, w)) at++;
      skipping = false;
    }
    if (at >= got.length) return `${w.text} expected, but only ${got.length} numbers were printed`;
    if (!matches(got[at]!.value, w)) return `number ${at + 1} printed is ${got[at]!.value}, the comment says ${w.text}`;
    at++;
  }
  if (!skipping && at < got.length) return `${got.length - at} more number(s) printed than the comment lists (from ${got[at]!.value}; end it with … to allow that)`;
  return undefined;
}

/** The code with each console.log tagged by its line, and the comment of each tagged line. */
function instrument(code: string): { code: string; comments: Map<number, string> } {
  const lines = code.split('\n');
  const comments = new Map<number, string>();
  const out = lines.map((line, i) => {
    const at = line.indexOf('console.log(');
    if (at < 0) return line;
    const m = /\)\s*;?\s*\/\/(.*)$/.exec(line);
    if (m) {
      let comment = m[1]!;
      for (let j = i + 1; j < lines.length && /^\s*\/\//.test(lines[j]!); j++) comment += ` ${lines[j]!.replace(/^\s*\/\//, '')}`;
      comments.set(i, comment);
    }
    return `${line.slice(0, at)}__log(${i}, ${line.slice(at + 'console.log('.length)}`;
  });
  // What console.log would print, on stderr with the line, whole arrays on one line each.
  const prelude = `import { formatWithOptions as __format } from 'node:util';
const __log = (line, ...args) => { console.log(...args); process.stderr.write('\\u0001' + JSON.stringify([line, __format({ maxArrayLength: Infinity, breakLength: Infinity }, ...args)]) + '\\n'); };`;
  return { code: `${prelude}\n${out.join('\n')}`, comments };
}

describe('README examples', () => {
  it('has runnable examples', () => expect(blocks.length).toBeGreaterThan(0));
  blocks.forEach((code, i) => {
    const title = code.split('\n').find((l) => l.includes('kernels.') || l.includes('new ') || l.includes('.load(')) ?? `block ${i}`;
    it(`runs and prints what its comments say: ${title.trim().slice(0, 60)}`, () => {
      const { code: tagged, comments } = instrument(code.replaceAll("from 'ovgpu'", `from '${dist}'`));
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', tagged], { encoding: 'utf8', timeout: 60_000 });
      const stderr = child.stderr.split('\n');
      expect(stderr.filter((l) => l && !l.startsWith('Warning: max') && !l.startsWith('\u0001')).join('\n')).toBe('');
      expect(child.status).toBe(0);
      const printed = new Map<number, string[]>();
      for (const l of stderr.filter((x) => x.startsWith('\u0001'))) {
        const [line, text] = JSON.parse(l.slice(1)) as [number, string];
        printed.set(line, [...(printed.get(line) ?? []), text]);
      }
      const mismatches = [...comments].flatMap(([line, comment]) => {
        const text = (printed.get(line) ?? []).join('\n');
        const why = compare(text, comment);
        return why ? [`line ${line + 1}: ${why}\n  printed: ${text}\n  comment: ${comment.trim()}`] : [];
      });
      expect(mismatches.join('\n')).toBe('');
    });
  });
});

describe('README headline table', () => {
  it('is what `npm run headline` generates from bench/results (no numbers typed by hand)', () => {
    const child = spawnSync(process.execPath, ['scripts/headline.mjs', '--check'], { encoding: 'utf8' });
    expect(child.stderr).toBe('');
    expect(child.status).toBe(0);
  });
});

describe('README comment check', () => {
  it('compares numbers in order within the stated tolerance', () => {
    expect(compare('Float32Array(4) [ -0.15865525603294373, 0, 0.8413447141647339, 1.9544997215270996 ]', ' Float32Array [-0.1587, 0, 0.8413, 1.9545]')).toBeUndefined();
    expect(compare('Float32Array(4) [ -0.15865525603294373, 0, 0.8413447141647339, 1.9544997215270996 ]', ' [-0.1587, 0, 0.8423, 1.9545]')).toMatch(/number 3 printed is 0.841/);
    expect(compare('[ 1, 2 ] 3', ' [1, 2]')).toMatch(/1 more number/);
    expect(compare('[ 1, 2 ] 3', ' [1, 2, …]')).toBeUndefined();
    expect(compare('{ liveBuffers: 0, liveBytes: 0, submits: 12 }', ' { liveBuffers: 0, liveBytes: 0, submits: … }')).toBeUndefined();
    expect(compare('[ 5, -1000000, 7 ] Int32Array(1) [ 0 ]', ' […, -1e6, …], Int32Array [0]')).toBeUndefined();
    expect(compare('32 2', ' 32 2 (text tower, scores)')).toBeUndefined();
    expect(compare('99.99999', ' 100')).toBeUndefined();
    expect(compare('99.9', ' 100')).toMatch(/says 100/);
    expect(compare('anything 1 2', ' CPU reference')).toBeUndefined();
    expect(compare("{ name: 'x1', dtype: 'F32' } Tensor(f16 [32, 48])", ' Tensor(f16 [32, 48])')).toBeUndefined();
  });
});

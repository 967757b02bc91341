// Issue 11, "Command line": every bad input ends with exit code 2 and one line on stderr, checked
// before the model loads where it can be; outputs are checked before inference and written under
// temporary names, renamed only when all of them were written.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TINY_CLIP, TINY_OWLVIT, writeRandomModel } from '../../src/models/random.js';
import { OutputFiles } from '../../src/cli/common.js';

const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');
const SAMPLE = join(__dirname, '..', '..', 'assets', 'sample.png');
let dir: string;
const at = (...p: string[]) => join(dir, ...p);

function ovgpu(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: '/tmp' }, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit code 2 and exactly one line, `ovgpu: …` matching `message` (so nothing was loaded before it). */
function expectBadInput(r: ReturnType<typeof ovgpu>, message: RegExp): void {
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^ovgpu: /);
  expect(lines[0]).toMatch(message);
  expect(r.status, r.stderr).toBe(2);
}

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build (npm test does)`);
  dir = mkdtempSync(join(tmpdir(), 'ovgpu-cli-rel-'));
  writeRandomModel(at('owl'), 'owlvit', TINY_OWLVIT, 1);
  writeRandomModel(at('clip'), 'clip', TINY_CLIP, 5);
  const png = readFileSync(SAMPLE);
  writeFileSync(at('truncated.png'), png.subarray(0, Math.floor(png.length / 2)));
  writeFileSync(at('noise.jpg'), Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 251)));
  mkdirSync(at('config-only'));
  copyFileSync(at('owl', 'config.json'), at('config-only', 'config.json'));
  mkdirSync(at('no-tokenizer'));
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(at('owl', f), at('no-tokenizer', f));
  mkdirSync(at('bad-weights'));
  for (const f of readdirSync(at('owl'))) copyFileSync(at('owl', f), at('bad-weights', f));
  writeFileSync(at('bad-weights', 'model.safetensors'), Buffer.from('\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1}        '));
  writeFileSync(at('inverted.json'), JSON.stringify([[10, 10, 50, 50], [80, 10, 20, 50]]));
  writeFileSync(at('outside.json'), JSON.stringify([[400, 10, 450, 50]]));
  writeFileSync(at('boxes.json'), JSON.stringify([[10, 10, 50, 50]]));
  mkdirSync(at('a-folder'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const owl = () => ['--model', at('owl')];
const regions = (...extra: string[]) => ['classify-regions', SAMPLE, '--model', at('clip'), '--boxes', at('boxes.json'), '--label', 'square', ...extra];

describe('bad input: exit code 2, one line, before the model loads', () => {
  it('a truncated image', () => expectBadInput(ovgpu('detect', at('truncated.png'), ...owl(), '--query', 'a cat'), /cannot read image .*truncated\.png/));
  it('an undecodable image', () => expectBadInput(ovgpu('detect', at('noise.jpg'), ...owl(), '--query', 'a cat'), /cannot read image .*noise\.jpg/));
  it('a truncated image query', () => expectBadInput(ovgpu('detect', SAMPLE, ...owl(), '--image-query', at('truncated.png')), /cannot read image .*truncated\.png/));
  it('a truncated image for classify-regions', () => expectBadInput(ovgpu('classify-regions', at('truncated.png'), '--model', at('clip'), '--boxes', at('boxes.json'), '--label', 'x'), /cannot read image/));
  it('an image path that is a folder', () => expectBadInput(ovgpu('detect', at('a-folder'), ...owl(), '--query', 'a cat'), /image .*a-folder is not a file/));
  it('--json in a missing folder', () => expectBadInput(ovgpu('detect', SAMPLE, ...owl(), '--query', 'a cat', '--json', at('missing', 'out.json')), /--json .*out\.json: folder .*missing does not exist/));
  it('--out in a missing folder', () => expectBadInput(ovgpu('detect', SAMPLE, ...owl(), '--query', 'a cat', '--out', at('missing', 'out.png')), /--out .*out\.png: folder .*missing does not exist/));
  it('--out that is a folder', () => expectBadInput(ovgpu('detect', SAMPLE, ...owl(), '--query', 'a cat', '--out', at('a-folder')), /--out .*a-folder is a folder/));
  it('an unwritable --out (a read-only file system)', () => expectBadInput(ovgpu('detect', SAMPLE, ...owl(), '--query', 'a cat', '--out', '/proc/ovgpu.png'), /--out \/proc\/ovgpu\.png cannot be written/));
  it('an unwritable --json for classify-regions', () => expectBadInput(ovgpu(...regions('--json', '/proc/ovgpu.json')), /--json \/proc\/ovgpu\.json cannot be written/));
  it('a model folder with only config.json', () => expectBadInput(ovgpu('detect', SAMPLE, '--model', at('config-only'), '--query', 'a cat'), /model folder .*config-only has no weights/));
  it('a model folder without tokenizer files, for text queries', () => expectBadInput(ovgpu('detect', SAMPLE, '--model', at('no-tokenizer'), '--query', 'a cat'), /has no tokenizer files/));
  it('an over-long query, with the limit', () => expectBadInput(ovgpu('detect', SAMPLE, ...owl(), '--query', 'a very long description of a thing that goes on'), /query "a very long.*" is longer than the model's context of 32 tokens.*--truncate/));
  it('an over-long label prompt', () => expectBadInput(ovgpu(...regions('--label', 'a very long description of a thing that goes on')), /longer than the model's context of 32 tokens/));
  it('an inverted box, named by index', () => expectBadInput(ovgpu('classify-regions', SAMPLE, '--model', at('clip'), '--boxes', at('inverted.json'), '--label', 'x'), /box 1 \[80, 10, 20, 50\] is empty or inverted/));
  it('a box wholly outside the image', () => expectBadInput(ovgpu('classify-regions', SAMPLE, '--model', at('clip'), '--boxes', at('outside.json'), '--label', 'x'), /box 0 .* lies wholly outside the 320×240 image/));
});

describe('bad input found while loading: exit code 2', () => {
  it('a corrupt model.safetensors', () => {
    const json = at('kept.json');
    writeFileSync(json, 'previous');
    const r = ovgpu('detect', SAMPLE, '--model', at('bad-weights'), '--query', 'a cat', '--json', json);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(/^ovgpu: .*model\.safetensors/);
    expect(r.status, r.stderr).toBe(2);
    // Nothing was written: the old file is untouched and no temporary file is left.
    expect(readFileSync(json, 'utf8')).toBe('previous');
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('outputs', () => {
  it('--truncate cuts an over-long query and the run succeeds; outputs appear only under their names', () => {
    const out = at('run');
    mkdirSync(out);
    const r = ovgpu('detect', SAMPLE, SAMPLE, ...owl(), '--query', 'a very long description of a thing that goes on', '--truncate', '--threshold', '0', '--json', join(out, 'd.json'), '--out', join(out, 'a.png'));
    expect(r.status, r.stderr).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['a-1.png', 'a-2.png', 'd.json']);
  });
  it('classify-regions takes --truncate', () => {
    const r = ovgpu(...regions('--label', 'a very long description of a thing that goes on', '--truncate', '--json', '-'));
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).regions).toHaveLength(1);
  });
  it('OutputFiles: nothing reaches its final name until commit; discard removes the temporary files', () => {
    const out = at('atomic');
    mkdirSync(out);
    writeFileSync(join(out, 'a.json'), 'old');
    const files = new OutputFiles();
    writeFileSync(files.temp(join(out, 'a.json')), 'new');
    writeFileSync(files.temp(join(out, 'b.png')), 'png');
    expect(readFileSync(join(out, 'a.json'), 'utf8')).toBe('old');
    files.discard();
    expect(readdirSync(out)).toEqual(['a.json']);
    const again = new OutputFiles();
    writeFileSync(again.temp(join(out, 'a.json')), 'new');
    again.commit();
    again.discard();
    expect(readdirSync(out)).toEqual(['a.json']);
    expect(readFileSync(join(out, 'a.json'), 'utf8')).toBe('new');
  });
});

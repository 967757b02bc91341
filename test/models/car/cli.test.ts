// `ovgpu segment` as a user runs it (dist/cli.js, built by npm test): the random demo CLIP end to
// end, a given model with a second classifier, and bad input (exit code 2, one line, nothing written).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { TINY_CLIP, writeRandomModel } from '../../../src/models/random.js';
import { ovgpu, requireBuiltCli, SAMPLE } from '../../util/cli.js';

let dir: string;

beforeAll(() => {
  requireBuiltCli();
  dir = mkdtempSync(join(tmpdir(), 'ovgpu-segment-'));
  writeFileSync(join(dir, 'not-an-image.png'), 'hello');
  writeRandomModel(join(dir, 'clip'), 'clip', { ...TINY_CLIP, text: { ...TINY_CLIP.text!, contextLength: 77 } }, 3);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ovgpu segment', () => {
  it('runs the whole pipeline with the random demo CLIP: overlay, masks, JSON, progress per stage, the warning', async () => {
    const json = join(dir, 'seg.json');
    const png = join(dir, 'overlay.png');
    const masks = join(dir, 'masks');
    const r = ovgpu('segment', SAMPLE, '--query', 'a red square', '--query', 'a blue circle', '--background', 'sky', '--prompt', 'circle,blur', '--out', png, '--masks', masks, '--json', json);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('RANDOM weights');
    expect(r.stderr).toMatch(/stage 1: proposals \(2 queries\) in [\d.]+ s/);
    expect(r.stderr).toMatch(/stage 1: classification \(2 queries\)/);
    expect(r.stderr).toMatch(/crf \(\d masks\)/);
    const out = JSON.parse(readFileSync(json, 'utf8'));
    expect(out).toMatchObject({ randomWeights: true, width: 320, height: 240, background: ['sky'], prompts: ['circle', 'blur'], threshold: 0.45, crf: true });
    expect(out.iterations).toBeGreaterThanOrEqual(2);
    expect(out.results.map((x: { query: string }) => x.query)).toEqual(['a red square', 'a blue circle']);
    expect(readdirSync(masks).sort()).toEqual(['1-a_red_square.png', '2-a_blue_circle.png']);
    for (const [i, f] of ['1-a_red_square.png', '2-a_blue_circle.png'].entries()) {
      const { data, info } = await sharp(join(masks, f)).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height]).toEqual([320, 240]);
      expect(data.filter((v) => v === 255).length).toBe(out.results[i].pixels);
      expect(data.every((v) => v === 0 || v === 255)).toBe(true);
    }
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 320, 240]);
  });

  it('with --model, --classifier, --no-crf and --json -: stdout holds only the JSON', () => {
    const model = join(dir, 'clip');
    const r = ovgpu('segment', SAMPLE, '--model', model, '--classifier', model, '--query', 'a square', '--no-crf', '--threshold', '0', '--json', '-');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('RANDOM weights');
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ model, classifier: model, crf: false, threshold: 0, results: [{ query: 'a square', survived: true }] });
  });

  const bad: [string, string[], RegExp][] = [
    ['no query', [SAMPLE], /at least one --query/],
    ['empty query', [SAMPLE, '--query', ' '], /--query is empty/],
    ['unknown prompt type', [SAMPLE, '--query', 'a', '--prompt', 'circle,glow'], /unknown visual prompt type "glow"/],
    ['threshold outside [0, 1]', [SAMPLE, '--query', 'a', '--threshold', '1.5'], /--threshold must be in \[0, 1\], got 1.5/],
    ['two images', [SAMPLE, SAMPLE, '--query', 'a'], /segment takes one image, got 2/],
    ['unreadable image', ['NOT_AN_IMAGE', '--query', 'a'], /cannot read image/],
    ['missing model folder', [SAMPLE, '--query', 'a', '--model', '/nonexistent/clip'], /model folder \/nonexistent\/clip not found/],
    ['--masks is a file', [SAMPLE, '--query', 'a', '--masks', SAMPLE], /--masks .* is not a folder/],
  ];
  for (const [name, args, message] of bad) {
    it(`bad input, exit code 2: ${name}`, () => {
      const r = ovgpu('segment', ...args.map((a) => (a === 'NOT_AN_IMAGE' ? join(dir, 'not-an-image.png') : a)));
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n').filter((l) => l.startsWith('ovgpu:'))).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    });
  }

  it('bad input, exit code 2: an image smaller than one patch', async () => {
    const small = join(dir, 'small.png');
    await sharp({ create: { width: 20, height: 12, channels: 3, background: '#808080' } }).png().toFile(small);
    const json = join(dir, 'small.json');
    const r = ovgpu('segment', small, '--query', 'a', '--json', json);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/20×12, smaller than one 32×32 patch/);
    expect(existsSync(json)).toBe(false);
  });
});

// The built command line, run as a user would (`npm test` builds dist/ first).
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { TINY_CLIP, writeRandomModel } from '../src/models/random.js';
import { ovgpu, requireBuiltCli, SAMPLE } from './util/cli.js';

let dir: string;

beforeAll(() => {
  requireBuiltCli();
  dir = mkdtempSync(join(tmpdir(), 'ovgpu-cli-'));
  writeFileSync(join(dir, 'not-an-image.png'), 'hello');
  writeFileSync(join(dir, 'boxes.json'), JSON.stringify([[28, 40, 118, 130], { box: [165, 35, 265, 135] }]));
  // A small random CLIP with the byte-level tokenizer (its answers mean nothing; the plumbing does).
  writeRandomModel(join(dir, 'clip'), 'clip', TINY_CLIP, 5);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ovgpu detect', () => {
  it('runs end to end on the sample image with the random demo model: JSON, an annotated PNG of the input size, the warning', async () => {
    const json = join(dir, 'det.json');
    const png = join(dir, 'det.png');
    const r = ovgpu('detect', SAMPLE, '--query', 'a red square', '--query', 'a blue circle', '--threshold', '0', '--json', json, '--out', png);
    expect(r.stderr).toContain('RANDOM weights');
    expect(r.stderr).toContain('--model /path/to/owlvit-base-patch32');
    expect(r.status).toBe(0);
    const out = JSON.parse(readFileSync(json, 'utf8'));
    expect(out).toMatchObject({ randomWeights: true, queries: ['a red square', 'a blue circle'], images: [{ width: 320, height: 240 }] });
    const dets = out.images[0].detections as { box: number[]; score: number; label: number; query: string }[];
    expect(dets.length).toBeGreaterThan(0);
    for (const d of dets) {
      expect(d.box).toHaveLength(4);
      expect(d.score).toBeGreaterThanOrEqual(0);
      expect(['a red square', 'a blue circle'][d.label]).toBe(d.query);
    }
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 320, 240]);
  });

  it('image-guided with --json - (stdout holds only the JSON), NMS 0.3 and --top', () => {
    const r = ovgpu('detect', SAMPLE, SAMPLE, '--image-query', SAMPLE, '--top', '3', '--json', '-');
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ queries: { image: SAMPLE }, threshold: 0, nms: 0.3 });
    expect(out.images).toHaveLength(2);
    for (const img of out.images) {
      expect(img.detections.length).toBeGreaterThan(0);
      expect(img.detections.length).toBeLessThanOrEqual(3);
      // Rescaled as the reference: the best box of an image scores 1.
      expect(img.detections[0].score).toBeCloseTo(1, 5);
    }
  });
});

describe('ovgpu classify-regions', () => {
  it('names given boxes: JSON and an annotated PNG of the input size', async () => {
    const json = join(dir, 'regions.json');
    const png = join(dir, 'regions.png');
    const r = ovgpu('classify-regions', SAMPLE, '--model', join(dir, 'clip'), '--boxes', join(dir, 'boxes.json'), '--label', 'square', '--label', 'circle', '--label', 'cat', '--attribute', 'red', '--attribute', 'blue', '--top', '2', '--json', json, '--out', png);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/loading CLIP from .*: done/);
    const out = JSON.parse(readFileSync(json, 'utf8'));
    expect(out.regions).toHaveLength(2);
    expect(out.regions[1].box).toEqual([165, 35, 265, 135]);
    for (const reg of out.regions) {
      expect(reg.categories).toHaveLength(2);
      expect(reg.attributes).toHaveLength(2);
      expect(reg.categories[0].score).toBeGreaterThanOrEqual(reg.categories[1].score);
    }
    expect(r.stdout.trim().split('\n')).toHaveLength(2);
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 320, 240]);
  });
});

describe('bad input: exit code 2 and one line saying why', () => {
  const cases: [string, () => string[], RegExp][] = [
    ['missing model folder', () => ['detect', SAMPLE, '--model', join(dir, 'nope'), '--query', 'a cat'], /model folder .*nope not found/],
    ['model path that is a file', () => ['detect', SAMPLE, '--model', SAMPLE, '--query', 'a cat'], /is not a folder/],
    ['unreadable image', () => ['detect', join(dir, 'not-an-image.png'), '--query', 'a cat'], /cannot read image .*not-an-image\.png/],
    ['missing image', () => ['detect', join(dir, 'missing.jpg'), '--query', 'a cat'], /image .*missing\.jpg not found/],
    ['no image', () => ['detect', '--query', 'a cat'], /needs at least one image/],
    ['no query', () => ['detect', SAMPLE], /needs at least one --query/],
    ['empty query', () => ['detect', SAMPLE, '--query', ' '], /--query is empty/],
    ['unknown flag', () => ['detect', SAMPLE, '--query', 'a cat', '--frobnicate'], /unknown option --frobnicate/],
    ['flag without a value', () => ['detect', SAMPLE, '--query'], /--query needs a value/],
    ['threshold out of range', () => ['detect', SAMPLE, '--query', 'a cat', '--threshold', '2'], /--threshold must be in \[0, 1\]/],
    ['top not an integer', () => ['detect', SAMPLE, '--query', 'a cat', '--top', '1.5'], /--top must be an integer/],
    ['threshold not a number', () => ['detect', SAMPLE, '--query', 'a cat', '--threshold', 'high'], /--threshold needs a number/],
    ['unreadable image query', () => ['detect', SAMPLE, '--image-query', join(dir, 'not-an-image.png')], /cannot read image/],
    ['unknown command', () => ['detcet', SAMPLE], /unknown command detcet/],
    ['regions: no label', () => ['classify-regions', SAMPLE, '--model', join(dir, 'clip'), '--boxes', join(dir, 'boxes.json')], /at least one --label/],
    ['regions: missing model', () => ['classify-regions', SAMPLE, '--model', join(dir, 'nope'), '--boxes', join(dir, 'boxes.json'), '--label', 'x'], /model folder .* not found/],
    ['regions: bad boxes file', () => ['classify-regions', SAMPLE, '--model', join(dir, 'clip'), '--boxes', join(dir, 'not-an-image.png'), '--label', 'x'], /cannot read boxes/],
    ['regions: unknown flag', () => ['classify-regions', SAMPLE, '--lable', 'x'], /unknown option --lable/],
  ];
  for (const [what, args, message] of cases) {
    it(what, () => {
      const r = ovgpu(...args());
      expect(r.status, r.stderr).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^ovgpu: /);
      expect(lines[0]).toMatch(message);
    });
  }
});

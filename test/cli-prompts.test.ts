// The built command line (`npm test` builds dist/ first): train-prompts, classify-regions with
// learned prompts over a JSONL, eval-attributes, their bad input (exit 2) and Ctrl-C (exit 130,
// the previous prompt file untouched).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TINY_CLIP, writeRandomModel } from '../src/models/random.js';
import { evaluateAttributes } from '../src/index.js';
import { writeShapes } from './util/shapes.js';
import { ovgpu, requireBuiltCli, CLI, CLI_ENV } from './util/cli.js';

let dir: string;
let data: string;

beforeAll(async () => {
  requireBuiltCli();
  dir = mkdtempSync(join(tmpdir(), 'ovgpu-cli-prompts-'));
  writeRandomModel(join(dir, 'clip'), 'clip', { ...TINY_CLIP, vision: { ...TINY_CLIP.vision!, patchSize: 16 } }, 3);
  const records = await writeShapes(dir, 12, 7);
  data = join(dir, 'train.jsonl');
  // Images relative to the data file, as users write them.
  writeFileSync(data, records.map((r) => JSON.stringify({ ...r, image: (r.image as string).slice(dir.length + 1) })).join('\n'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ovgpu train-prompts / classify-regions --prompts --data / eval-attributes', () => {
  it('trains, writes the prompt file, predicts every box and evaluates the predictions', () => {
    const out = join(dir, 'prompts.safetensors');
    const r = ovgpu('train-prompts', '--model', join(dir, 'clip'), '--data', data, '--out', out, '--epochs', '3', '--batch', '8', '--n-ctx', '4', '--lr', '0.02', '--holdout', '0.25');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/epoch 1\/3 {2}loss \d\.\d{3} acc \d\.\d{3} \| held-out loss \d\.\d{3} acc \d\.\d{3} mAP \d\.\d{3}/);
    expect(r.stdout).toMatch(/18 training and 6 held-out boxes; best epoch \d/);
    expect(r.stdout).toMatch(/held-out category accuracy \d\.\d{3} \(templates \d\.\d{3}\), attribute mAP/);
    expect(r.stdout).toContain(`wrote ${out}`);
    expect(existsSync(out)).toBe(true);

    const preds = join(dir, 'preds.json');
    const c = ovgpu('classify-regions', '--data', data, '--model', join(dir, 'clip'), '--prompts', out, '--json', preds);
    expect(c.status, c.stderr).toBe(0);
    const predicted = JSON.parse(readFileSync(preds, 'utf8')) as { image: string; boxes: { box: number[]; scores: { categories: Record<string, number>; attributes: Record<string, number> } }[] }[];
    expect(predicted).toHaveLength(12);
    for (const p of predicted) for (const b of p.boxes) {
      expect(Object.values(b.scores.categories).reduce((s, v) => s + v, 0)).toBeCloseTo(1, 4);
      expect(Object.keys(b.scores.attributes).sort()).toEqual(['blue', 'green', 'red']);
    }

    const e = ovgpu('eval-attributes', preds, data, '--json', '-');
    expect(e.status, e.stderr).toBe(0);
    const result = JSON.parse(e.stdout);
    const lines = readFileSync(data, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const names = result.attributes ? Object.keys(result.attributes.ap) : [];
    const scores = predicted.flatMap((p) => p.boxes.flatMap((b) => names.map((n) => b.scores.attributes[n]!)));
    const labels = lines.flatMap((l) => l.boxes.flatMap((b: { attributes: Record<string, number> }) => names.map((n) => b.attributes[n] ?? -1)));
    expect(result.attributes.mAP).toBeCloseTo(evaluateAttributes({ scores, labels, attributes: names }).mAP!, 6);
    expect(result.categories.count).toBe(24);
    // One image with given boxes: categories and attributes come from the file.
    const boxesFile = join(dir, 'boxes.json');
    writeFileSync(boxesFile, JSON.stringify([[2, 2, 30, 30], [34, 10, 60, 40]]));
    const one = ovgpu('classify-regions', join(dir, 'shape-0.png'), '--model', join(dir, 'clip'), '--boxes', boxesFile, '--prompts', out, '--top', '2', '--json', '-');
    expect(one.status, one.stderr).toBe(0);
    const regions = JSON.parse(one.stdout).regions as { categories: { name: string }[]; attributes: { name: string; score: number }[] }[];
    expect(regions).toHaveLength(2);
    for (const r of regions) {
      expect(r.categories).toHaveLength(2);
      expect(r.attributes.map((a) => a.name).every((n) => ['red', 'green', 'blue'].includes(n))).toBe(true);
    }
    expect(ovgpu('classify-regions', join(dir, 'shape-0.png'), '--model', join(dir, 'clip'), '--boxes', boxesFile, '--prompts', out, '--label', 'x').stderr).toMatch(/--label and --prompts: .*prompts\.safetensors holds the categories/);

    // Box-free: the random demo OWL-ViT's boxes, each described with the learned prompts.
    const sample = join(__dirname, '..', 'assets', 'sample.png');
    const d = ovgpu('detect', sample, '--query', 'a shape', '--threshold', '0', '--top', '3', '--attributes', out, '--clip', join(dir, 'clip'), '--json', '-');
    expect(d.status, d.stderr).toBe(0);
    const dets = JSON.parse(d.stdout).images[0].detections as { description: { categories: { name: string; score: number }[]; attributes: Record<string, number> } | null }[];
    expect(dets).toHaveLength(3);
    for (const det of dets) {
      expect(['square', 'circle', 'triangle']).toContain(det.description!.categories[0]!.name);
      expect(Object.keys(det.description!.attributes).sort()).toEqual(['blue', 'green', 'red']);
      for (const p of Object.values(det.description!.attributes)) expect(p).toBeGreaterThanOrEqual(0), expect(p).toBeLessThanOrEqual(1);
    }
    const printed = ovgpu('eval-attributes', preds, data);
    expect(printed.stdout).toMatch(/attribute mAP \d\.\d{4} over 3 attributes\ncategory top-1 \d\.\d{4}, top-5 1\.0000 over 24 boxes/);
  }, 600_000);

  it('bad input: exit 2 with one line naming the file, line and what was expected', () => {
    const clip = join(dir, 'clip');
    const out = join(dir, 'never.safetensors');
    const bad = join(dir, 'bad.jsonl');
    const run = (...args: string[]) => ovgpu('train-prompts', '--model', clip, '--out', out, ...args);
    const expectBad = (r: ReturnType<typeof ovgpu>, pattern: RegExp) => {
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(pattern);
    };
    expectBad(run(), /train-prompts needs --data <train\.jsonl>/);
    writeFileSync(bad, `${readFileSync(data, 'utf8').split('\n')[0]}\n{"image": "nowhere.png", "boxes": [{"box": [1, 2, 3, 4]}]}`);
    expectBad(run('--data', bad), /bad\.jsonl:2: image .*nowhere\.png does not exist/);
    writeFileSync(bad, '{"image": "shape-0.png", "boxes": []}');
    expectBad(run('--data', bad), /bad\.jsonl:1: the record has no boxes/);
    expectBad(run('--data', data, '--attribute', 'red'), /train\.jsonl:1: box 0: attribute "(green|blue)" is not in the attribute vocabulary/);
    expectBad(run('--data', data, '--position', 'left'), /--position must be one of end, middle, front, got left/);
    expectBad(run('--data', data, '--epochs', '1.5'), /--epochs must be an integer/);
    expect(existsSync(out)).toBe(false);
    expectBad(ovgpu('detect', join(__dirname, '..', 'assets', 'sample.png'), '--query', 'a cat', '--attributes', out), /--attributes needs --clip/);
    expectBad(ovgpu('eval-attributes', data), /eval-attributes takes <predictions\.json> <annotations\.jsonl>, got 1/);
    expectBad(ovgpu('classify-regions', '--data', data, '--model', clip, '--prompts', join(dir, 'none.safetensors'), '--json', '-'), /--prompts .*none\.safetensors not found/);
  }, 300_000);

  it('Ctrl-C stops training with exit 130 and leaves the previous prompt file as it was', async () => {
    const out = join(dir, 'kept.safetensors');
    writeFileSync(out, 'the previous prompts');
    const child = spawn(process.execPath, [CLI, 'train-prompts', '--model', join(dir, 'clip'), '--data', data, '--out', out, '--epochs', '100000', '--patience', '100000', '--n-ctx', '2'], { env: CLI_ENV });
    let stderr = '';
    let sent = false;
    const status = await new Promise<number | null>((resolve) => {
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (!sent && /epoch 2\//.test(stderr)) sent = child.kill('SIGINT');
      });
      child.on('exit', (code) => resolve(code));
    });
    expect(status, stderr).toBe(130);
    expect(stderr).toContain(`interrupted; ${out} left as it was`);
    expect(readFileSync(out, 'utf8')).toBe('the previous prompts');
  }, 300_000);
});

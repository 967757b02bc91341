// Issue 11, "Command line": every bad input ends with exit code 2 and one line on stderr, checked
// before the model loads where it can be; outputs are checked before inference and written under
// temporary names, renamed only when all of them were written.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TINY_CLIP, TINY_OWLVIT, writeRandomModel } from '../../src/models/random.js';
import { OutputFiles } from '../../src/cli/common.js';
import { ovgpu, requireBuiltCli, SAMPLE } from '../util/cli.js';

let dir: string;
const at = (...p: string[]) => join(dir, ...p);

/** Exit code 2 and exactly one line, `ovgpu: …` matching `message` (so nothing was loaded before it). */
function expectBadInput(r: ReturnType<typeof ovgpu>, message: RegExp): void {
  // Dawn itself warns about two limits whenever it starts an adapter (a bad --adapter starts some).
  const lines = r.stderr.trim().split('\n').filter((l) => !/^Warning: \w+ artificially reduced/.test(l));
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^ovgpu: /);
  expect(lines[0]).toMatch(message);
  expect(r.status, r.stderr).toBe(2);
}

beforeAll(() => {
  requireBuiltCli();
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
  // Model folders whose config.json is malformed, or well-formed with a wrong-typed field.
  const owlConfig = JSON.parse(readFileSync(at('owl', 'config.json'), 'utf8'));
  const configs: Record<string, string> = { 'malformed-config': '{not json', 'null-heads': JSON.stringify({ ...owlConfig, text_config: { ...owlConfig.text_config, num_attention_heads: null } }) };
  for (const [name, text] of Object.entries(configs)) {
    mkdirSync(at(name));
    for (const f of readdirSync(at('owl'))) copyFileSync(at('owl', f), at(name, f));
    writeFileSync(at(name, 'config.json'), text);
  }
  const files: Record<string, string> = { 'object.json': '{"a": 1}', 'short.json': '[[1, 2, 3]]', 'string.json': '[[1, 2, 3, "x"]]', 'infinite.json': '[[1e400, 1, 2, 3]]', 'nan.json': '[[NaN, 1, 2, 3]]', 'empty.json': '[]' };
  for (const [f, text] of Object.entries(files)) writeFileSync(at(f), text);
  writeFileSync(at('predictions.json'), JSON.stringify([{ image: SAMPLE, boxes: [{ box: [10, 10, 50, 50], scores: { categories: { square: 1 }, attributes: { red: 0.5 } } }] }]));
  writeFileSync(at('train.jsonl'), `${JSON.stringify({ image: SAMPLE, boxes: [{ box: [10, 10, 50, 50], category: 'square', attributes: { red: 1 } }] })}\n`);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const owl = () => ['--model', at('owl')];
const train = (...extra: string[]) => ['train-prompts', '--model', at('clip'), '--data', at('train.jsonl'), '--out', at('p.safetensors'), ...extra];
const regionsWith = (boxes: string) => ['classify-regions', SAMPLE, '--model', at('clip'), '--boxes', boxes, '--label', 'x'];
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

// Every argument and option of every command, fed a bad value: exit code 2, one line naming the
// argument (or file) and saying what was expected, before the GPU is opened.
describe('every flag of every command, given a bad value', () => {
  const detect = (...extra: string[]) => ['detect', SAMPLE, ...owl(), ...extra];
  const cases: [string, () => string[], RegExp][] = [
    ['an unknown command', () => ['detcet'], /unknown command detcet \(commands: demo, detect, classify-regions/],
    ['demo: an argument', () => ['demo', 'extra'], /demo takes no arguments, got extra/],
    ['demo: an unknown option', () => ['demo', '--json', 'x'], /unknown option --json/],
    ['demo: --backend that does not exist', () => ['demo', '--backend', 'nosuch'], /^ovgpu: --backend nosuch: .*nosuch/],
    ['demo: --adapter that does not exist', () => ['demo', '--adapter', 'nosuch'], /^ovgpu: --adapter nosuch: /],
    ['detect: no image', () => ['detect', ...owl(), '--query', 'a'], /detect needs at least one image/],
    ['detect: an empty image path', () => ['detect', '', ...owl(), '--query', 'a'], /an image path is empty/],
    ['detect: a missing image', () => ['detect', at('nope.png'), ...owl(), '--query', 'a'], /image .*nope\.png not found/],
    ['detect: no query', () => ['detect', SAMPLE, ...owl()], /needs at least one --query/],
    ['detect: an empty --query', () => detect('--query', ''), /--query is empty/],
    ['detect: a blank --query', () => detect('--query', '   '), /--query is empty/],
    ['detect: --query without a value', () => detect('--query'), /--query needs a value/],
    ['detect: --query and --image-query', () => detect('--query', 'a', '--image-query', SAMPLE), /give text queries or --image-query, not both/],
    ['detect: an empty --image-query', () => detect('--image-query', ''), /--image-query is empty/],
    ['detect: a missing --image-query', () => detect('--image-query', at('nope.png')), /image .*nope\.png not found/],
    ['detect: --image-query that is a folder', () => detect('--image-query', at('a-folder')), /image .*a-folder is not a file/],
    ['detect: --threshold not a number', () => detect('--query', 'a', '--threshold', 'high'), /--threshold needs a number, got "high"/],
    ['detect: --threshold NaN', () => detect('--query', 'a', '--threshold', 'NaN'), /--threshold needs a number, got "NaN"/],
    ['detect: --threshold Infinity', () => detect('--query', 'a', '--threshold', 'Infinity'), /--threshold needs a number, got "Infinity"/],
    ['detect: --threshold above 1', () => detect('--query', 'a', '--threshold', '2'), /--threshold must be in \[0, 1\], got 2/],
    ['detect: --threshold below 0', () => detect('--query', 'a', '--threshold', '-0.5'), /--threshold must be in \[0, 1\], got -0\.5/],
    ['detect: an empty --threshold=', () => detect('--query', 'a', '--threshold='), /--threshold is empty/],
    ['detect: --nms above 1', () => detect('--query', 'a', '--nms', '5'), /--nms must be in \[0, 1\], got 5/],
    ['detect: --nms not a number', () => detect('--query', 'a', '--nms', 'abc'), /--nms needs a number, got "abc"/],
    ['detect: --top 0', () => detect('--query', 'a', '--top', '0'), /--top must be in \[1, /],
    ['detect: --top negative', () => detect('--query', 'a', '--top', '-3'), /--top must be in \[1, /],
    ['detect: --top not an integer', () => detect('--query', 'a', '--top', '1.5'), /--top must be an integer, got 1\.5/],
    ['detect: --truncate with a value', () => detect('--query', 'a', '--truncate=yes'), /--truncate takes no value/],
    ['detect: --dtype f64', () => detect('--query', 'a', '--dtype', 'f64'), /--dtype must be f32 or f16, got f64/],
    ['detect: --model given twice', () => detect('--query', 'a', ...owl()), /--model given twice/],
    ['detect: an empty --model', () => ['detect', SAMPLE, '--model', '', '--query', 'a'], /--model is empty/],
    ['detect: a missing --model', () => ['detect', SAMPLE, '--model', at('nope'), '--query', 'a'], /model folder .*nope not found/],
    ['detect: --model that is a file', () => ['detect', SAMPLE, '--model', SAMPLE, '--query', 'a'], /is not a folder/],
    ['detect: --model with a malformed config.json (text query)', () => ['detect', SAMPLE, '--model', at('malformed-config'), '--query', 'a'], /malformed-config\/config\.json: .*JSON/],
    ['detect: --model with a malformed config.json (image query)', () => ['detect', SAMPLE, '--model', at('malformed-config'), '--image-query', SAMPLE], /malformed-config\/config\.json: .*JSON/],
    ['detect: --model with a null head count (image query)', () => ['detect', SAMPLE, '--model', at('null-heads'), '--image-query', SAMPLE], /null-heads\/config\.json: text_config\.num_attention_heads must be a positive integer, got null/],
    ['detect: a CLIP folder as --model (image query)', () => ['detect', SAMPLE, '--model', at('clip'), '--image-query', SAMPLE], /config\.json: model_type is "clip", expected "owlvit"/],
    ['detect: an empty --json', () => detect('--query', 'a', '--json', ''), /--json is empty/],
    ['detect: --json that is a folder', () => detect('--query', 'a', '--json', at('a-folder')), /--json .*a-folder is a folder/],
    ['detect: an empty --out', () => detect('--query', 'a', '--out', ''), /--out is empty/],
    ['detect: --json and --out naming the same file', () => detect('--query', 'a', '--json', at('same'), '--out', at('same')), /--json and --out both write .*same/],
    ['detect: --backend that does not exist', () => detect('--query', 'a', '--backend', 'nosuch'), /^ovgpu: --backend nosuch: /],
    ['detect: --adapter that does not exist', () => detect('--query', 'a', '--adapter', 'nosuch'), /^ovgpu: --adapter nosuch: /],
    ['detect: a single-dash option', () => detect('--query', 'a', '-x'), /unknown option -x/],
    ['regions: no image', () => regions().filter((a) => a !== SAMPLE), /classify-regions takes one image, got 0/],
    ['regions: two images', () => [...regions(), SAMPLE], /classify-regions takes one image, got 2/],
    ['regions: no --model', () => ['classify-regions', SAMPLE, '--boxes', at('boxes.json'), '--label', 'a'], /needs --model/],
    ['regions: a malformed config.json', () => ['classify-regions', SAMPLE, '--model', at('malformed-config'), '--boxes', at('boxes.json'), '--label', 'a'], /malformed-config\/config\.json: /],
    ['regions: no --boxes', () => ['classify-regions', SAMPLE, '--model', at('clip'), '--label', 'a'], /needs --boxes/],
    ['regions: a missing --boxes file', () => regionsWith(at('nope.json')), /cannot read boxes from .*nope\.json/],
    ['regions: --boxes that is a folder', () => regionsWith(at('a-folder')), /cannot read boxes from .*a-folder/],
    ['regions: --boxes that is not JSON', () => regionsWith(SAMPLE), /cannot read boxes from .*sample\.png/],
    ['regions: --boxes with NaN (not JSON)', () => regionsWith(at('nan.json')), /cannot read boxes from .*nan\.json/],
    ['regions: --boxes holding an object', () => regionsWith(at('object.json')), /object\.json: expected a list of boxes/],
    ['regions: a box of 3 numbers', () => regionsWith(at('short.json')), /short\.json: box 0 must be 4 finite numbers .*got \[1,2,3\]/],
    ['regions: a box holding a string', () => regionsWith(at('string.json')), /string\.json: box 0 must be 4 finite numbers/],
    ['regions: an infinite coordinate', () => regionsWith(at('infinite.json')), /infinite\.json: box 0 must be 4 finite numbers .*Infinity/],
    ['regions: no --label', () => ['classify-regions', SAMPLE, '--model', at('clip'), '--boxes', at('boxes.json')], /at least one --label/],
    ['regions: an empty --label', () => regions('--label', ''), /--label is empty/],
    ['regions: an empty --attribute', () => regions('--attribute', ' '), /--attribute is empty/],
    ['regions: a --template without {}', () => regions('--template', 'a photo'), /--template "a photo" has no \{\} to put the label in/],
    ['regions: --top 0', () => regions('--top', '0'), /--top must be in \[1, 64\], got 0/],
    ['regions: --top 65', () => regions('--top', '65'), /--top must be in \[1, 64\], got 65/],
    ['regions: --top not an integer', () => regions('--top', '2.5'), /--top must be an integer, got 2\.5/],
    ['regions: --resize fit', () => regions('--resize', 'fit'), /--resize must be squash or crop, got fit/],
    ['regions: --dtype f8', () => regions('--dtype', 'f8'), /--dtype must be f32 or f16, got f8/],
    ['regions: --out in a missing folder', () => regions('--out', at('missing', 'x.png')), /--out .*x\.png: folder .*missing does not exist/],
    ['regions: --json and --out naming the same file', () => regions('--json', at('same'), '--out', at('same')), /--json and --out both write/],
    ['regions: --backend that does not exist', () => regions('--backend', 'nosuch'), /^ovgpu: --backend nosuch: /],
    ['regions: an option of detect', () => regions('--query', 'x'), /unknown option --query/],
    ['train-prompts: no --model', () => ['train-prompts', '--data', at('train.jsonl'), '--out', at('p.safetensors')], /train-prompts needs --model/],
    ['train-prompts: a malformed config.json', () => ['train-prompts', '--model', at('malformed-config'), '--data', at('train.jsonl'), '--out', at('p.safetensors')], /malformed-config\/config\.json: /],
    ['train-prompts: a missing --data', () => ['train-prompts', '--model', at('clip'), '--data', at('nope.jsonl'), '--out', at('p.safetensors')], /--data .*nope\.jsonl not found/],
    ['train-prompts: --data that is not JSONL', () => ['train-prompts', '--model', at('clip'), '--data', SAMPLE, '--out', at('p.safetensors')], /sample\.png:1: not JSON/],
    ['train-prompts: --out in a missing folder', () => ['train-prompts', '--model', at('clip'), '--data', at('train.jsonl'), '--out', at('missing', 'p.safetensors')], /--out .*: folder .*missing does not exist/],
    ['train-prompts: --out and --json naming the same file', () => train('--json', at('p.safetensors')), /--out and --json both write .*p\.safetensors/],
    ['train-prompts: --epochs 0', () => train('--epochs', '0'), /--epochs must be in \[1, /],
    ['train-prompts: --epochs not an integer', () => train('--epochs', '1.5'), /--epochs must be an integer, got 1\.5/],
    ['train-prompts: --lr 0', () => train('--lr', '0'), /--lr must be in /],
    ['train-prompts: --holdout 1', () => train('--holdout', '1'), /--holdout must be in \[0, 0\.99\], got 1/],
    ['train-prompts: --position side', () => train('--position', 'side'), /--position must be one of end, middle, front, got side/],
    ['train-prompts: an empty --init', () => train('--init', ''), /--init is empty/],
    ['train-prompts: an empty --category', () => train('--category', ''), /--category is empty/],
    ['eval-attributes: one argument', () => ['eval-attributes', at('boxes.json')], /eval-attributes takes <predictions\.json> <annotations\.jsonl>, got 1/],
    ['eval-attributes: missing predictions', () => ['eval-attributes', at('nope.json'), at('train.jsonl')], /cannot read .*nope\.json/],
    ['eval-attributes: predictions that are not records', () => ['eval-attributes', at('boxes.json'), at('train.jsonl')], /boxes\.json: expected a list of \{ image, boxes/],
    ['eval-attributes: missing annotations', () => ['eval-attributes', at('predictions.json'), at('nope.jsonl')], /annotations .*nope\.jsonl not found/],
    ['eval-attributes: --json in a missing folder', () => ['eval-attributes', at('boxes.json'), at('train.jsonl'), '--json', at('missing', 'x.json')], /--json .*x\.json: folder .*missing does not exist/],
  ];
  for (const [what, args, message] of cases) it(what, () => expectBadInput(ovgpu(...args()), message));

  it('an empty box list is not an error: no regions', () => {
    const r = ovgpu('classify-regions', SAMPLE, '--model', at('clip'), '--boxes', at('empty.json'), '--label', 'x', '--json', '-');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).regions).toEqual([]);
  });
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

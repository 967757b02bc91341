import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { ClipTokenizer, TokenizerError } from '../../src/models/tokenizer/index.js';
import { fixText } from '../../src/models/tokenizer/ftfy.js';
import { htmlUnescape } from '../../src/models/tokenizer/html.js';
import { fixturePath } from '../util/fixtures.js';

interface TokenizerCase {
  text: string;
  ids: number[] | null;
  error?: string;
  ids_truncate: number[];
  bpe: number[];
  cleaned: string;
  decoded: string;
}

const fixture = JSON.parse(readFileSync(fixturePath('tokenizer.json'), 'utf8')) as { cases: TokenizerCase[]; context_length: number };
const bpePath = fixturePath('bpe_simple_vocab_16e6.txt.gz');
const tokenizer = await ClipTokenizer.load(bpePath);
const dir = mkdtempSync(join(tmpdir(), 'ovgpu-tok-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every fixture case through `tok`: ids, truncated ids, the error, BPE ids, cleaned and decoded text. */
function expectFixtureCases(tok: ClipTokenizer, fields: { cleaned: boolean }): void {
  expect(fixture.cases.length).toBe(50);
  for (const [i, c] of fixture.cases.entries()) {
    const label = `case ${i} ${JSON.stringify(c.text.slice(0, 40))}`;
    if (c.ids === null) {
      expect(() => tok.encode(c.text), label).toThrow(TokenizerError);
      // The reference raises RuntimeError with this message.
      expect(() => tok.encode(c.text), label).toThrow(c.error!.replace(/^RuntimeError: /, ''));
    } else {
      expect(Array.from(tok.encode(c.text)), label).toEqual(c.ids);
    }
    expect(Array.from(tok.encode(c.text, { truncate: true })), label).toEqual(c.ids_truncate);
    expect(tok.encodeTokens(c.text), label).toEqual(c.bpe);
    if (fields.cleaned) {
      expect(tok.clean(c.text), label).toBe(c.cleaned);
      expect(tok.decode(c.bpe), label).toBe(c.decoded);
    }
  }
}

describe('ClipTokenizer (OpenAI merges file)', () => {
  it('matches clip.tokenize on all 50 fixture cases', () => {
    expect(tokenizer.sotId).toBe(49406);
    expect(tokenizer.eotId).toBe(49407);
    expect(tokenizer.vocabSize).toBe(49408);
    expectFixtureCases(tokenizer, { cleaned: true });
  });

  it('returns BPE token strings, batches, other context lengths and decodes rows', () => {
    expect(tokenizer.tokenize('A photo of a cat')).toEqual(['a</w>', 'photo</w>', 'of</w>', 'a</w>', 'cat</w>']);
    const texts = ['a photo of a cat', 'hello world', ''];
    const { ids, shape } = tokenizer.encodeBatch(texts, { contextLength: 8 });
    expect(shape).toEqual([3, 8]);
    const rows = texts.map((t) => Array.from(tokenizer.encode(t, { contextLength: 8 })));
    expect(Array.from(ids)).toEqual(rows.flat());
    expect(rows[2]).toEqual([49406, 49407, 0, 0, 0, 0, 0, 0]);
    // Seven tokens do not fit in 8 with SOT and EOT: an error, or the first 7 ids then EOT.
    const long = 'a b c d e f g';
    expect(() => tokenizer.encode(long, { contextLength: 8 })).toThrow(`Input ${long} is too long for context length 8`);
    expect(Array.from(tokenizer.encode(long, { contextLength: 8, truncate: true }))).toEqual([49406, ...tokenizer.encodeTokens(long).slice(0, 6), 49407]);
    expect(tokenizer.decode(tokenizer.encode('Hello, World!'), { skipSpecial: true })).toBe('hello , world ! ');
    expect(() => tokenizer.encode('x', { contextLength: 0 })).toThrow(/contextLength must be a positive integer/);
    expect(() => tokenizer.encodeBatch(['x'], { contextLength: 2.5 })).toThrow(/contextLength must be a positive integer/);
    expect(() => tokenizer.decode([49408])).toThrow(/id 49408 is not in the vocabulary/);
    expect(() => tokenizer.tokenIds(['not-a-token'])).toThrow(/"not-a-token" is not in the vocabulary/);
  });

  it('rejects missing files, empty folders and malformed merges', async () => {
    await expect(ClipTokenizer.load(join(dir, 'nope.txt.gz'))).rejects.toThrow(/no such file or folder/);
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    await expect(ClipTokenizer.load(empty)).rejects.toThrow(/folder holds none of tokenizer.json, vocab.json, bpe_simple_vocab_16e6.txt.gz/);
    const notGzip = join(dir, 'bad.txt.gz');
    writeFileSync(notGzip, 'plain text');
    await expect(ClipTokenizer.load(notGzip)).rejects.toThrow(/cannot decompress/);
    expect(() => ClipTokenizer.fromOpenAIMerges('#version\na b\nc d e\n', 'm.txt')).toThrow(/m.txt: merge on line 3 is not two tokens: "c d e"/);
  });
});

describe('ClipTokenizer (Hugging Face files)', () => {
  // The Hugging Face files of openai/clip-vit-base-patch32, rebuilt here from OpenAI's merges the
  // way its vocabulary is defined: byte characters, the same with '</w>', merged pairs, SOT, EOT.
  const lines = gunzipSync(readFileSync(bpePath)).toString('utf8').split('\n').slice(1, 48895);
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const byteChars: string[] = [];
  for (let b = 0; b < 256; b++) if (printable(b)) byteChars.push(String.fromCharCode(b));
  for (let b = 0, n = 0; b < 256; b++) if (!printable(b)) byteChars.push(String.fromCharCode(256 + n++));
  const tokens = [...byteChars, ...byteChars.map((c) => `${c}</w>`), ...lines.map((l) => l.replace(' ', '')), '<|startoftext|>', '<|endoftext|>'];
  // Written in reverse order, so that ids must come from the values, not from the order.
  const vocab = Object.fromEntries(tokens.map((t, id) => [t, id] as const).reverse());
  const folder = join(dir, 'hf');
  mkdirSync(folder);
  writeFileSync(join(folder, 'vocab.json'), JSON.stringify(vocab));
  writeFileSync(join(folder, 'merges.txt'), `#version: 0.2\n${lines.join('\n')}\n`);
  const tokenizerJson = join(dir, 'tokenizer.json');
  const { '<|startoftext|>': sot, '<|endoftext|>': eot, ...plain } = vocab;
  writeFileSync(
    tokenizerJson,
    JSON.stringify({
      added_tokens: [
        { id: sot, content: '<|startoftext|>', special: true },
        { id: eot, content: '<|endoftext|>', special: true },
      ],
      model: { type: 'BPE', vocab: plain, merges: lines.map((l) => l.split(' ')), end_of_word_suffix: '</w>' },
    }),
  );

  it('vocab.json + merges.txt (as a folder) gives the fixture ids', async () => {
    expectFixtureCases(await ClipTokenizer.load(folder), { cleaned: false });
  });

  it('tokenizer.json (merges as pairs, specials as added tokens) gives the fixture ids', async () => {
    const tok = await ClipTokenizer.load(tokenizerJson);
    expect([tok.sotId, tok.eotId]).toEqual([49406, 49407]);
    expectFixtureCases(tok, { cleaned: false });
  });

  it('rejects tokenizer files that are not CLIP BPE', async () => {
    const bad = (json: unknown) => () => ClipTokenizer.fromTokenizerJson(json, 't.json');
    expect(bad({ model: { type: 'WordPiece', vocab: {} } })).toThrow(/t.json: not a BPE tokenizer.json/);
    expect(bad({ model: { type: 'BPE', vocab: {}, merges: [], end_of_word_suffix: '' } })).toThrow(/end_of_word_suffix "" is not CLIP's/);
    expect(bad({ model: { type: 'BPE', vocab: { a: 0 }, merges: [] } })).toThrow(/vocabulary lacks <\|startoftext\|> or <\|endoftext\|>/);
    expect(bad({ model: { type: 'BPE', vocab: { a: -1 }, merges: [] } })).toThrow(/token "a" has id -1/);
    expect(bad({ model: { type: 'BPE', vocab: [], merges: [] } })).toThrow(/vocabulary must be an object/);
    const lonely = join(dir, 'lonely');
    mkdirSync(lonely);
    writeFileSync(join(lonely, 'vocab.json'), '{}');
    await expect(ClipTokenizer.load(lonely)).rejects.toThrow(/no merges.txt beside it/);
    writeFileSync(join(lonely, 'tokenizer.json'), '{');
    await expect(ClipTokenizer.load(lonely)).rejects.toThrow(/tokenizer.json: not valid JSON/);
  });
});

describe('text cleaning', () => {
  it("unescapes HTML as Python's html.unescape (expected values from Python 3.11)", () => {
    const cases: [string, string][] = [
      ['&notit;', '\u00acit;'], ['&amp', '&'], ['&ampx;', '&x;'], ['&#1;', ''], ['&#0;', '\ufffd'], ['&#13;', '\r'],
      ['&#128;', '\u20ac'], ['&#129;', '\u0081'], ['&#x110000;', '\ufffd'], ['&#xD800;', '\ufffd'], ['&#65', 'A'],
      ['&#X41;x', 'Ax'], ['&#xFDD0;', ''], ['&#x10FFFF;', ''], ['&lt;b&gt;', '<b>'], ['&amp;amp;', '&amp;'],
      ['&Eacute', '\u00c9'], ['&EACUTE;', '&EACUTE;'], ['&NotEqualTilde;', '\u2242\u0338'], ['&unknown;', '&unknown;'],
      ['a & b', 'a & b'], ['&#99999999999999999999;', '\ufffd'],
      ['&ThisIsAVeryLongEntityNameOver32Characters;', '&ThisIsAVeryLongEntityNameOver32Characters;'],
      ['&frac12;&frac12&frac1', '\u00bd\u00bd&frac1'],
    ];
    for (const [input, want] of cases) expect(htmlUnescape(input), input).toBe(want);
  });

  it("applies ftfy's fixers as its documentation shows them", () => {
    const cases: [string, string][] = [
      // fix_encoding: UTF-8 read as Latin-1 / Windows-1252, and restore_byte_a0.
      ['sÃ³', 'só'],
      ['schÃ¶n', 'schön'],
      ['voilÃ le travail', 'voilà le travail'],
      ['This \u00e2\u20ac\u201d should be an em dash', 'This \u2014 should be an em dash'],
      ['This text is fine already :þ', 'This text is fine already :þ'],
      // unescape_html: only with ';', all-caps Latin names, not when the text has '<'.
      ['HTML entities &lt;3', 'HTML entities <3'],
      ['<em>HTML entities &lt;3</em>', '<em>HTML entities &lt;3</em>'],
      ['P&EACUTE;REZ', 'PÉREZ'],
      ['BUNDESSTRA&SZLIG;E', 'BUNDESSTRASSE'],
      ['&ntilde; &Ntilde; &NTILDE; &nTILDE;', 'ñ Ñ Ñ &nTILDE;'],
      ['&Jscr;ohn &HilbertSpace;ancock', '𝒥ohn ℋancock'],
      ['this&not that', 'this&not that'],
      ['\ufeffParty like\nit&rsquo;s 1999!', "Party like\nit's 1999!"],
      // character width, ligatures, quotes, line breaks, terminal escapes, control characters.
      ['ＬＯＵＤ　ＮＯＩＳＥＳ', 'LOUD NOISES'],
      ['Ｕﾀｰﾝ', 'Uターン'],
      ['ﬂuﬃeﬆ', 'fluffiest'],
      ['\u201chere\u2019s a test\u201d', '"here\'s a test"'],
      ['two\r\nthree\rfour\u2028five\u2029six', 'two\nthree\nfour\nfive\nsix'],
      ["\x1b[36;44mI'm blue, da ba dee da ba doo...\x1b[0m", "I'm blue, da ba dee da ba doo..."],
      ['a\x00b\x07c\x7fd\u206ae\ufffcf\tg', 'abcdef\tg'],
      ['lone \ud800 surrogate', 'lone \ufffd surrogate'],
      ['cafe\u0301', 'café'],
    ];
    for (const [input, want] of cases) expect(fixText(input), JSON.stringify(input)).toBe(want);
  });
});

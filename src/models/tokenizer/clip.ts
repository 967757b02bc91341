// CLIP's byte-level BPE tokenizer, as openai/CLIP's simple_tokenizer.py and clip.tokenize do it:
// clean (ftfy, HTML-unescape twice, collapse whitespace, lowercase), split with CLIP's regex,
// map UTF-8 bytes to printable characters, apply the merges with '</w>' closing each word, then
// SOT … EOT, zero padded to the context length. The merges come from OpenAI's
// bpe_simple_vocab_16e6.txt.gz or from a Hugging Face tokenizer.json / vocab.json + merges.txt;
// the cleaning is OpenAI's either way.
import { gunzip, locate, readFile, type FileSet, type ModelSource } from '../../io/source.js';
import { fixText } from './ftfy.js';
import { htmlUnescape } from './html.js';

export class TokenizerError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TokenizerError';
  }
}

export interface EncodeOptions {
  /** Length of each row of ids (77 for CLIP). */
  contextLength?: number;
  /** Keep the first contextLength - 1 ids and end with EOT instead of throwing on long input. */
  truncate?: boolean;
}

const SOT = '<|startoftext|>';
const EOT = '<|endoftext|>';
const END_OF_WORD = '</w>';
/** The OpenAI file holds more merges than CLIP uses: the reference keeps lines 1 … 48894. */
const OPENAI_MERGES = 49152 - 256 - 2;
/** File names looked for in a folder, in this order. */
export const TOKENIZER_FILES = ['tokenizer.json', 'vocab.json', 'bpe_simple_vocab_16e6.txt.gz'];
const CACHE_LIMIT = 100_000;
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** GPT-2/CLIP byte → character table: printable Latin-1 bytes map to themselves, the rest to U+0100… */
export function bytesToUnicode(): string[] {
  const table = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : next++);
  }
  return table;
}

/** The byte characters in the reference's vocabulary order: printable ones first, then the rest. */
function byteVocabulary(table: string[]): string[] {
  return [...table.filter((c) => c.codePointAt(0)! < 256), ...table.filter((c) => c.codePointAt(0)! >= 256)];
}

// Python's str.strip() whitespace is Unicode White_Space plus U+001C-U+001F; the regex module's \s
// is White_Space (JS's \s differs: it includes U+FEFF and lacks U+0085).
const STRIP = /^[\p{White_Space}\x1c-\x1f]+|[\p{White_Space}\x1c-\x1f]+$/gu;
// CLIP's splitter, which the reference runs case-insensitively on lowercased text. Two
// consequences are spelt out instead of using the 'i' flag: "'s" also matches "'ſ" (long s folds
// to s), and U+0345 (which folds to a letter) matches nothing, so it is left out of the last class.
const SPLIT = /<\|startoftext\|>|<\|endoftext\|>|'[sſ]|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\p{White_Space}\p{L}\p{N}\u0345]+/gu;

export class ClipTokenizer {
  /** Id of `<|startoftext|>` (49406 for CLIP). */
  readonly sotId: number;
  /** Id of `<|endoftext|>` (49407 for CLIP). */
  readonly eotId: number;
  readonly vocabSize: number;
  readonly #encoder: Map<string, number>;
  readonly #decoder: Map<number, string>;
  readonly #ranks: Map<string, number>;
  readonly #byteEncoder = bytesToUnicode();
  readonly #byteDecoder = new Map(this.#byteEncoder.map((c, b) => [c, b]));
  readonly #cache = new Map<string, string[]>();
  /** The most bytes one BPE token can hold (a merge joins two): a word of n bytes needs ≥ n / this tokens. */
  readonly #maxTokenBytes: number;

  private constructor(vocab: Map<string, number>, merges: readonly (readonly [string, string])[], source: string) {
    this.#encoder = vocab;
    this.#decoder = new Map([...vocab].map(([token, id]) => [id, token]));
    this.#ranks = new Map(merges.map(([a, b], rank) => [`${a} ${b}`, rank]));
    const sot = vocab.get(SOT);
    const eot = vocab.get(EOT);
    if (sot === undefined || eot === undefined) throw new TokenizerError(`${source}: vocabulary lacks ${SOT} or ${EOT}`);
    this.sotId = sot;
    this.eotId = eot;
    // A loop, not Math.max(...values): a huge vocabulary would overflow the call stack as arguments.
    let maxId = 0;
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    const bytes = (t: string) => (t.endsWith(END_OF_WORD) ? t.length - END_OF_WORD.length : t.length);
    this.#maxTokenBytes = merges.reduce((m, [a, b]) => Math.max(m, bytes(a) + bytes(b)), 1);
  }

  /**
   * Loads OpenAI's merges file (.txt.gz, or the same text uncompressed), a Hugging Face
   * tokenizer.json, a vocab.json with merges.txt beside it, or a folder holding one of these: a
   * path (Node), a URL (a folder's ends with '/'), or files by name (see ModelSource).
   */
  static async load(source: ModelSource): Promise<ClipTokenizer> {
    const { files, file } = await locate(source);
    let name = file;
    if (name === undefined) {
      for (const f of TOKENIZER_FILES) {
        const bytes = await readFile(files, f).catch(() => undefined);
        if (bytes) return ClipTokenizer.#fromFile(files, f, bytes);
      }
      throw new TokenizerError(`${files.name}: folder holds none of ${TOKENIZER_FILES.join(', ')}`);
    }
    const bytes = await readFile(files, name).catch((err: unknown) => {
      throw new TokenizerError(`${files.path(name!)}: cannot read (${(err as Error).message})`, { cause: err });
    });
    if (!bytes) throw new TokenizerError(`${files.path(name)}: no such file or folder`);
    return ClipTokenizer.#fromFile(files, name, bytes);
  }

  /** A tokenizer from one file's bytes, by the file's name (merges.txt read from beside a vocab.json). */
  static async #fromFile(files: FileSet, name: string, bytes: Uint8Array): Promise<ClipTokenizer> {
    const path = files.path(name);
    const base = name.slice(name.lastIndexOf('/') + 1);
    if (base === 'vocab.json' || base.endsWith('.vocab.json')) {
      const mergesName = name.slice(0, name.length - base.length) + 'merges.txt';
      const merges = await readFile(files, mergesName).catch(() => undefined);
      if (!merges) throw new TokenizerError(`${path}: no merges.txt beside it`);
      return ClipTokenizer.fromHuggingFace(parseJson(path, bytes), utf8Decoder.decode(merges), path);
    }
    if (base.endsWith('.json')) return ClipTokenizer.fromTokenizerJson(parseJson(path, bytes), path);
    let text: string;
    try {
      text = utf8Decoder.decode(base.endsWith('.gz') ? await gunzip(bytes) : bytes);
    } catch (err) {
      throw new TokenizerError(`${path}: cannot decompress (${(err as Error).message})`, { cause: err });
    }
    return ClipTokenizer.fromOpenAIMerges(text, path);
  }

  /** From the text of OpenAI's bpe_simple_vocab_16e6.txt: the vocabulary is built from the merges. */
  static fromOpenAIMerges(text: string, source = 'merges'): ClipTokenizer {
    const merges = parseMerges(text.split('\n').slice(1, OPENAI_MERGES + 1), source, 2);
    const bytes = byteVocabulary(bytesToUnicode());
    const tokens = [...bytes, ...bytes.map((c) => c + END_OF_WORD), ...merges.map(([a, b]) => a + b), SOT, EOT];
    return new ClipTokenizer(new Map(tokens.map((t, id) => [t, id])), merges, source);
  }

  /** From a Hugging Face vocab.json object and merges.txt text. */
  static fromHuggingFace(vocab: unknown, mergesText: string, source = 'vocab.json'): ClipTokenizer {
    const lines = mergesText.split('\n');
    const header = lines[0]?.startsWith('#version') ? 1 : 0;
    const merges = parseMerges(lines.slice(header).filter((l) => l.trim() !== ''), source, 1 + header);
    return new ClipTokenizer(vocabularyFrom(vocab, source), merges, source);
  }

  /** From a Hugging Face tokenizer.json object (a BPE model with '</w>' word ends, as CLIP's). */
  static fromTokenizerJson(json: unknown, source = 'tokenizer.json'): ClipTokenizer {
    const model = (json as { model?: Record<string, unknown> } | null)?.model;
    if (!model || model.type !== 'BPE' || !Array.isArray(model.merges)) throw new TokenizerError(`${source}: not a BPE tokenizer.json`);
    if (model.end_of_word_suffix !== undefined && model.end_of_word_suffix !== END_OF_WORD) {
      throw new TokenizerError(`${source}: end_of_word_suffix ${JSON.stringify(model.end_of_word_suffix)} is not CLIP's "${END_OF_WORD}"`);
    }
    const lines = model.merges.map((m: unknown) => (Array.isArray(m) ? m.join(' ') : String(m)));
    const vocab = vocabularyFrom(model.vocab, source);
    for (const t of (json as { added_tokens?: { id?: unknown; content?: unknown }[] }).added_tokens ?? []) {
      if (typeof t.content === 'string' && Number.isInteger(t.id)) vocab.set(t.content, t.id as number);
    }
    return new ClipTokenizer(vocab, parseMerges(lines, source, 1), source);
  }

  /** The text the splitter sees: ftfy fixes, HTML unescaped twice, whitespace collapsed, lowercase. */
  clean(text: string): string {
    const basic = pyStrip(htmlUnescape(htmlUnescape(fixText(text))));
    return pyStrip(basic.replace(/\p{White_Space}+/gu, ' ')).toLowerCase();
  }

  /** BPE tokens (strings of byte characters, '</w>' closing each word) of raw text. */
  tokenize(text: string): string[] {
    return this.tokenizeCleaned(this.clean(text));
  }

  /** BPE tokens of text that is already cleaned (see `clean`). */
  tokenizeCleaned(cleaned: string): string[] {
    return this.#tokens(cleaned, Infinity, true).tokens;
  }

  /**
   * BPE tokens of cleaned text, word by word, stopping once there are more than `limit` (each word
   * is encoded alone, so later words cannot change earlier tokens). Unless `truncate`, a word too
   * long to fit even at the most bytes per token is found too long before its BPE runs (whose cost
   * grows faster than the word's length).
   */
  #tokens(cleaned: string, limit: number, truncate: boolean): { tokens: string[]; tooLong: boolean } {
    const tokens: string[] = [];
    for (const [word] of cleaned.matchAll(SPLIT)) {
      const bytes = utf8.encode(word);
      if (!truncate && tokens.length + Math.ceil(bytes.length / this.#maxTokenBytes) > limit) return { tokens, tooLong: true };
      // Not push(...tokens): a long word's tokens would overflow the call stack as arguments.
      for (const token of this.#bpe(Array.from(bytes, (b) => this.#byteEncoder[b]!).join(''))) tokens.push(token);
      if (tokens.length > limit) break;
    }
    return { tokens, tooLong: tokens.length > limit };
  }

  /** Token ids without SOT/EOT or padding (the reference's SimpleTokenizer.encode). */
  encodeTokens(text: string): number[] {
    return this.tokenIds(this.tokenize(text));
  }

  /** Ids of BPE token strings. */
  tokenIds(tokens: readonly string[]): number[] {
    return tokens.map((t) => {
      const id = this.#encoder.get(t);
      if (id === undefined) throw new TokenizerError(`token ${JSON.stringify(t)} is not in the vocabulary`);
      return id;
    });
  }

  /** One row of ids: SOT, tokens, EOT, zeros up to `contextLength` (clip.tokenize). */
  encode(text: string, options: EncodeOptions = {}): Int32Array {
    const { contextLength = 77, truncate = false } = options;
    if (!Number.isInteger(contextLength) || contextLength < 1) {
      throw new TokenizerError(`contextLength must be a positive integer, got ${contextLength}`);
    }
    const { tokens, tooLong } = this.#tokens(this.clean(text), contextLength - 2, truncate);
    if (tooLong && !truncate) throw new TokenizerError(`Input ${text} is too long for context length ${contextLength}`);
    const ids = [this.sotId, ...this.tokenIds(tokens), this.eotId];
    if (ids.length > contextLength) {
      ids.length = contextLength;
      ids[contextLength - 1] = this.eotId;
    }
    const row = new Int32Array(contextLength);
    row.set(ids);
    return row;
  }

  /** Rows for several texts, stacked: ids of shape [texts.length, contextLength]. */
  encodeBatch(texts: readonly string[], options: EncodeOptions = {}): { ids: Int32Array; shape: [number, number] } {
    const contextLength = options.contextLength ?? 77;
    const ids = new Int32Array(texts.length * contextLength);
    texts.forEach((t, i) => ids.set(this.encode(t, options), i * contextLength));
    return { ids, shape: [texts.length, contextLength] };
  }

  /**
   * Text of ids as the reference decodes it ('</w>' becomes a space, invalid UTF-8 becomes U+FFFD).
   * `skipSpecial` drops SOT and stops at the first EOT, so that an encoded row decodes to its text.
   */
  decode(ids: ArrayLike<number>, options: { skipSpecial?: boolean } = {}): string {
    const bytes: number[] = [];
    for (const id of Array.from(ids)) {
      if (options.skipSpecial && id === this.sotId) continue;
      if (options.skipSpecial && id === this.eotId) break;
      const token = this.#decoder.get(id);
      if (token === undefined) throw new TokenizerError(`id ${id} is not in the vocabulary`);
      for (const c of token) {
        const b = this.#byteDecoder.get(c);
        if (b === undefined) throw new TokenizerError(`token ${JSON.stringify(token)} holds a character outside the byte table`);
        bytes.push(b);
      }
    }
    return new TextDecoder().decode(new Uint8Array(bytes)).replaceAll(END_OF_WORD, ' ');
  }

  #bpe(token: string): string[] {
    if (token === SOT || token === EOT) return [token];
    const cached = this.#cache.get(token);
    if (cached) return cached;
    let word = [...token];
    word[word.length - 1] += END_OF_WORD;
    while (word.length > 1) {
      let best: number | undefined;
      let first = '';
      let second = '';
      for (let i = 0; i + 1 < word.length; i++) {
        const rank = this.#ranks.get(`${word[i]} ${word[i + 1]}`);
        if (rank !== undefined && (best === undefined || rank < best)) [best, first, second] = [rank, word[i]!, word[i + 1]!];
      }
      if (best === undefined) break;
      const merged: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i++;
        } else {
          merged.push(word[i]!);
        }
      }
      word = merged;
    }
    // An unbounded cache (as the reference has) would grow forever in a long-running process.
    if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    this.#cache.set(token, word);
    return word;
  }
}

function pyStrip(text: string): string {
  return text.replace(STRIP, '');
}

function parseJson(path: string, bytes: Uint8Array): unknown {
  try {
    return JSON.parse(utf8Decoder.decode(bytes));
  } catch (err) {
    throw new TokenizerError(`${path}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
}

function parseMerges(lines: string[], source: string, firstLine: number): [string, string][] {
  return lines.map((line, i) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2 || parts[0] === '') throw new TokenizerError(`${source}: merge on line ${firstLine + i} is not two tokens: ${JSON.stringify(line)}`);
    return parts as [string, string];
  });
}

function vocabularyFrom(vocab: unknown, source: string): Map<string, number> {
  if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) throw new TokenizerError(`${source}: vocabulary must be an object of token ids`);
  const map = new Map<string, number>();
  for (const [token, id] of Object.entries(vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) throw new TokenizerError(`${source}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}`);
    map.set(token, id as number);
  }
  return map;
}

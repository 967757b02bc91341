// A subset of ftfy 6.3's `fix_text`, the first step of CLIP's text cleaning. No JS port of ftfy
// exists on npm, so the fixers are written here from ftfy's documented behaviour:
//
// Done as ftfy does: line-by-line segments (HTML unescaping switched off from the first segment
// holding '<' on), repeated until nothing changes: unescape_html (HTML5 names with semicolons,
// all-caps Latin names such as &EACUTE;, numeric references), fix_c1_controls,
// fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks, fix_surrogates,
// remove_terminal_escapes, remove_control_chars, NFC.
//
// Partial: fix_encoding (mojibake). ftfy decides that text "looks bad" with a large heuristic;
// here only a few of its rules count (MOJIBAKE_SIGN: C1 controls, Â/Ã before a symbol, 'â€'),
// which cover UTF-8 for U+0080-U+00FF and U+2000-U+203F read as Windows-1252. Text showing one
// is re-encoded as Latin-1, then as (sloppy) Windows-1252, and kept if it decodes as UTF-8, with
// ftfy's restore_byte_a0 and replace_lossy_sequences. Not done: the other eight single-byte
// encodings ftfy tries, CESU-8 / Java UTF-8 (such text is left alone), decode_inconsistent_utf8.
// So mojibake ftfy detects by other signs stays unfixed here; nothing is "fixed" that ftfy leaves.
import { htmlUnescape, namedReference } from './html.js';

const MAX_DECODE_LENGTH = 1_000_000;

/** ftfy's `fix_text(text)` with its default configuration, for the subset described above. */
export function fixText(text: string): string {
  let out = '';
  let unescape = true;
  for (let pos = 0; pos < text.length; ) {
    let end = text.indexOf('\n', pos) + 1 || text.length;
    if (end - pos > MAX_DECODE_LENGTH) end = pos + MAX_DECODE_LENGTH;
    const segment = text.slice(pos, end);
    if (segment.includes('<')) unescape = false;
    out += fixSegment(segment, unescape);
    pos = end;
  }
  return out;
}

function fixSegment(text: string, unescape: boolean): string {
  for (;;) {
    const before = text;
    if (unescape) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = text.replace(/[\x80-\x9f]/g, (c) => WINDOWS_1252_HIGH[c.charCodeAt(0) - 0x80]!);
    text = text.replace(LIGATURE_RE, (c) => LIGATURES[c]!);
    text = text.replace(/[\u3000\uff01-\uffef]/g, (c) => (c === '\u3000' ? ' ' : c.normalize('NFKC')));
    text = text.replace(/[\u02bc\u2018-\u201b]/g, "'").replace(/[\u201c-\u201f]/g, '"');
    text = text.replace(/\r\n?|[\u2028\u2029\x85]/g, '\n');
    text = text.replace(/\p{Cs}/gu, '\ufffd');
    text = text.replace(/\x1b\[[\p{Nd};]*[a-zA-Z]/gu, '');
    text = text.replace(/[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g, '');
    text = text.normalize('NFC');
    if (text === before) return text;
  }
}

/** ftfy's unescape_html: only references ending in ';', plus all-caps forms of lowercase names. */
function unescapeHtml(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(/&#?[0-9A-Za-z]{1,24};/g, (ref) => {
    if (ref[1] === '#') {
      const decoded = htmlUnescape(ref);
      return decoded.includes(';') ? ref : decoded;
    }
    const exact = namedReference(ref);
    if (exact !== undefined) return exact;
    const lower = ref.toLowerCase();
    const lowered = lower !== ref && lower.toUpperCase() === ref ? namedReference(lower) : undefined;
    return lowered !== undefined && htmlUnescape(ref) === ref ? lowered.toUpperCase() : ref;
  });
}

// Windows-1252's characters for bytes 0x80-0x9F; the five bytes it leaves undefined keep their
// Latin-1 C1 control character, as ftfy's "sloppy" codec does.
const WINDOWS_1252_HIGH = [...'€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ'];
const WINDOWS_1252_BYTE = new Map(WINDOWS_1252_HIGH.map((c, i) => [c, 0x80 + i]));

const LIGATURES: Record<string, string> = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': 'ʼn', 'Ǳ': 'DZ', 'ǲ': 'Dz', 'ǳ': 'dz', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž',
  'Ǉ': 'LJ', 'ǈ': 'Lj', 'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj',
  'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'g');

/**
 * Signs that text is UTF-8 read as Latin-1/Windows-1252, each a full match of one of ftfy's
 * badness rules (so this never fires where ftfy would not): a C1 control; Â or Ã (UTF-8 lead bytes
 * C2/C3) before a symbol that a continuation byte reads as (not '…', '’', 'Œ', 'Ž', which are
 * plausible there; '¥' only after a letter or space); "Ã " after a letter or at the start; 'â€'.
 */
const MOJIBAKE_SIGN =
  /[\x80-\x9f]|[ÂÃ][€‚ƒ„†‡ˆ‰Š‹‘“”•–—˜™š›œžŸ\xa0¡¢£¤¦§¨©ª«¬\xad®¯°±²³´µ¶·¸¹º»¼½¾¿]|[a-z \t\n][ÂÃ]¥|[a-z][ \t\n]?[ÂÃ] |^[ÂÃ] |â€/;

/** Bytes as a "binary string" (one char per byte) so that byte patterns can be regexes. */
function encodeSingleByte(text: string, sloppy1252: boolean): string | undefined {
  let out = '';
  for (const c of text) {
    const code = c.codePointAt(0)!;
    if (!sloppy1252) {
      if (code > 0xff) return undefined;
      out += c;
    } else if (code < 0x80 || (code >= 0xa0 && code <= 0xff)) {
      if (code === 0x1a) return undefined;
      out += c;
    } else if (code === 0xfffd) {
      out += '\x1a'; // the sloppy codecs write a lost byte as 0x1A
    } else {
      const b = WINDOWS_1252_BYTE.get(c);
      if (b === undefined) return undefined;
      out += String.fromCharCode(b);
    }
  }
  return out;
}

// ftfy's restore_byte_a0: a space that stands where UTF-8 needs byte 0xA0 (replaced by some
// program that took 0xA0 for a no-break space) is put back, "Ã " as a whole word becoming "à ".
const A_GRAVE_WORD = /\xc3 (?! |quele|quela|quilo|s )/g;
const ALTERED_UTF8 =
  /[\xc2\xc3\xc5\xce\xd0\xd9] |[\xe2\xe3] [\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf] |\xf0 [\x80-\xbf][\x80-\xbf]|\xf0[\x80-\xbf] [\x80-\xbf]|\xf0[\x80-\xbf][\x80-\xbf] /g;
// ftfy's replace_lossy_sequences: UTF-8 sequences with a byte lost to U+FFFD (0x1A) or '?'.
const LOSSY_UTF8 =
  /[\xc2-\xdf]\x1a|[\xc2-\xc3]\?|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a/g;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function fixEncoding(text: string): string {
  for (;;) {
    const fixed = fixEncodingStep(text);
    if (fixed === text) return text;
    text = fixed;
  }
}

function fixEncodingStep(text: string): string {
  if (!MOJIBAKE_SIGN.test(text)) return text;
  for (const sloppy of [false, true]) {
    let bytes = encodeSingleByte(text, sloppy);
    if (bytes === undefined) continue;
    ALTERED_UTF8.lastIndex = 0;
    if (ALTERED_UTF8.test(bytes)) {
      bytes = bytes.replace(A_GRAVE_WORD, '\xc3\xa0 ').replace(ALTERED_UTF8, (m) => m.replaceAll(' ', '\xa0'));
    }
    if (sloppy) bytes = bytes.replace(LOSSY_UTF8, '\xef\xbf\xbd');
    try {
      return utf8.decode(Uint8Array.from(bytes, (c) => c.charCodeAt(0)));
    } catch {
      // ftfy would try its CESU-8/Java decoder here: leave such text as it is.
      if (/[\xed\xc0]/.test(bytes)) return text;
    }
  }
  return text;
}

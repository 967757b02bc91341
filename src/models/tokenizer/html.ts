// Python's html.unescape, exactly. Named references (the HTML5 table, legacy names without a
// semicolon, longest-prefix matching) come from the `entities` package, whose decodeHTML agrees
// with Python on them; numeric references follow Python's own rules here, because Python drops
// the "invalid" code points (&#1;, &#127;, &#xFDD0;, ...) that `entities` keeps.
import { decodeHTML, decodeHTMLStrict } from 'entities';

/** What Python's html.unescape matches: one reference at a time, names of at most 32 characters. */
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/g;

/** Numeric references Python maps to Windows-1252 characters (and NUL to U+FFFD, CR to CR). */
const NUMERIC_REPLACEMENTS = new Map<number, string>([
  [0x00, '\ufffd'], [0x0d, '\r'], [0x80, '\u20ac'], [0x81, '\x81'], [0x82, '\u201a'], [0x83, '\u0192'],
  [0x84, '\u201e'], [0x85, '\u2026'], [0x86, '\u2020'], [0x87, '\u2021'], [0x88, '\u02c6'], [0x89, '\u2030'],
  [0x8a, '\u0160'], [0x8b, '\u2039'], [0x8c, '\u0152'], [0x8d, '\x8d'], [0x8e, '\u017d'], [0x8f, '\x8f'],
  [0x90, '\x90'], [0x91, '\u2018'], [0x92, '\u2019'], [0x93, '\u201c'], [0x94, '\u201d'], [0x95, '\u2022'],
  [0x96, '\u2013'], [0x97, '\u2014'], [0x98, '\u02dc'], [0x99, '\u2122'], [0x9a, '\u0161'], [0x9b, '\u203a'],
  [0x9c, '\u0153'], [0x9d, '\x9d'], [0x9e, '\u017e'], [0x9f, '\u0178'],
]);

/** Code points Python's html.unescape turns into nothing. */
function droppedCodePoint(n: number): boolean {
  return (
    (n >= 0x01 && n <= 0x08) || n === 0x0b || (n >= 0x0e && n <= 0x1f) || (n >= 0x7f && n <= 0x9f) ||
    (n >= 0xfdd0 && n <= 0xfdef) || (n & 0xfffe) === 0xfffe
  );
}

function numericReference(body: string): string {
  const hex = body[1] === 'x' || body[1] === 'X';
  const digits = body.slice(hex ? 2 : 1).replace(/;$/, '');
  const big = BigInt((hex ? '0x' : '') + digits);
  if (big > 0x10ffffn) return '\ufffd';
  const n = Number(big);
  const replacement = NUMERIC_REPLACEMENTS.get(n);
  if (replacement !== undefined) return replacement;
  if (n >= 0xd800 && n <= 0xdfff) return '\ufffd';
  return droppedCodePoint(n) ? '' : String.fromCodePoint(n);
}

/** Python's `html.unescape(text)`. */
export function htmlUnescape(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(CHARREF, (match, body: string) => (body[0] === '#' ? numericReference(body) : decodeHTML(match)));
}

/** The character a semicolon-terminated named reference such as `&eacute;` stands for, if any. */
export function namedReference(reference: string): string | undefined {
  const decoded = decodeHTMLStrict(reference);
  return decoded === reference ? undefined : decoded;
}

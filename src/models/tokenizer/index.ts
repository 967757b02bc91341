export { ClipTokenizer, TokenizerError, bytesToUnicode, type EncodeOptions } from './clip.js';

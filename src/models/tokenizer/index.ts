export { ClipTokenizer, TokenizerError, bytesToUnicode, TOKENIZER_FILES, type EncodeOptions } from './clip.js';

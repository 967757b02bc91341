export {
  RegionClassifier,
  promptTexts,
  DEFAULT_TEMPLATES,
  DEFAULT_ATTRIBUTE_TEMPLATES,
  type Box,
  type ClassifyOptions,
  type PromptTokenizer,
  type RegionImage,
  type RegionResize,
  type RegionResult,
  type ScoredName,
  type LearnedWords,
} from './classifier.js';

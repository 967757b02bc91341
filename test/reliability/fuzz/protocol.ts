// What the loader fuzz's test and its worker process (child.ts) tell each other.

/** clip_tiny as an HF folder, an OpenAI-named file, and an HF folder of two shards; owlvit_tiny. */
export type Model = 'clip-hf' | 'clip-openai' | 'clip-sharded' | 'owlvit';
export const MODELS: readonly Model[] = ['clip-hf', 'clip-openai', 'clip-sharded', 'owlvit'];

/** What a case must end in: an error, a load identical to the unmutated one, a load, or either. */
export type Expect = 'error' | 'same' | 'loads' | 'either';

export interface FuzzReport {
  index: number;
  model: Model;
  kind: string;
  what: string;
  expect: Expect;
  /** Strings an error message must contain (files, tensor, config field). */
  mentions: string[];
  outcome: 'error' | 'loaded';
  isGpuError?: boolean;
  error?: string;
  /** For loads: whether every weight is bit-identical to the unmutated load's. */
  same?: boolean;
  ms: number;
}

export interface FuzzInit {
  seed: number;
  fixtures: string;
}

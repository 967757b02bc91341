export { PromptLearner, CLASS_TOKEN_POSITIONS, type ClassTokenPosition, type PromptLearnerOptions, type PromptGraph } from './learner.js';
export { PromptObjective, type PromptLabels, type PromptObjectiveOptions, type PromptStepResult } from './objective.js';
export { averagePrecision, categoryAccuracy, evaluateAttributes, type AttributeEvaluation, type AttributeEvaluationInput } from './evaluate.js';
export { savePrompts, readPrompts, encodePrompts, clipIdentity, promptSetOf, PROMPTS_FORMAT, type PromptSet, type LearnedPrompts, type ClipIdentity } from './file.js';
export { trainPrompts, readPromptRecords, checkRecords, type PromptRecord, type PromptBox, type TrainPromptsOptions, type TrainPromptsResult, type EpochReport } from './train.js';
export { describeBoxes, type DescribedBox } from './describe.js';

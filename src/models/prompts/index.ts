export { PromptLearner, CLASS_TOKEN_POSITIONS, type ClassTokenPosition, type PromptLearnerOptions, type PromptGraph } from './learner.js';
export { PromptObjective, type PromptLabels, type PromptObjectiveOptions, type PromptStepResult } from './objective.js';

export { GraphBuilder, Value, type GraphNode, type ValueSource, type ViewOrigin, type RegionWordSimilarityGraphOptions } from './builder.js';
export type { GradientOptions, GradContext, GradRule } from './grad/index.js';
export { GraphPlan, type RunOptions, type RunResult, type RunProfile, type NodeTiming, type MemoryReport, type GraphInput } from './plan.js';
export { formatProfile } from './profile.js';
export { planMemory, type Lifetime, type MemoryPlan } from './memory.js';
export { PlanCache, PLAN_CACHE_DEFAULTS, type PlanCacheLimits } from './cache.js';

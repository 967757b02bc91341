import { afterAll, describe, type TestContext } from 'vitest';
import { openGpu, type Gpu, type GpuProfile, type OpenGpuOptions } from '../../src/index.js';

/**
 * One Gpu per test file (or per `forEachProfile` suite), closed after its tests. `options` adds
 * other openGpu options, e.g. `limits` to reach the chunked paths of kernels with small tensors.
 */
export function useGpu(profile: OpenGpuOptions['profile'] = 'auto', options: OpenGpuOptions = {}): () => Promise<Gpu> {
  let opened: Promise<Gpu> | undefined;
  afterAll(async () => {
    if (opened) (await opened).close();
  });
  return () => (opened ??= openGpu({ ...options, profile }));
}

/** Both kernel profiles: every kernel test runs its suite under each on whatever adapter runs the tests. */
export const PROFILES: readonly GpuProfile[] = ['cpu', 'gpu'];

/**
 * Runs `suite` once per profile inside `describe('profile <name>')`, each with its own Gpu opened
 * with that profile (closed after the suite, so only one is open at a time).
 */
export function forEachProfile(suite: (profile: GpuProfile, getGpu: () => Promise<Gpu>) => void): void {
  for (const profile of PROFILES) describe(`profile ${profile}`, () => suite(profile, useGpu(profile)));
}

/** Skips the test, visibly and with the reason, where the device lacks `shader-f16`. */
export function requireF16(ctx: TestContext, gpu: Gpu): void {
  ctx.skip(!gpu.features.has('shader-f16'), "the adapter does not offer 'shader-f16'");
}

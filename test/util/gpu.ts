import { afterAll } from 'vitest';
import { openGpu, type Gpu } from '../../src/index.js';

/** One Gpu per test file, closed after the file's tests. */
export function useGpu(): () => Promise<Gpu> {
  let opened: Promise<Gpu> | undefined;
  afterAll(async () => {
    if (opened) (await opened).close();
  });
  return () => (opened ??= openGpu());
}

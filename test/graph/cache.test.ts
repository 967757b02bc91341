import { describe, expect, it } from 'vitest';
import { GraphBuilder, PlanCache, PLAN_CACHE_DEFAULTS, type GraphPlan } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';

const getGpu = useGpu();

/** A cache whose plans scale their input by `s` (key `s`), counting compilations. */
function scaler(cache: PlanCache) {
  const built: string[] = [];
  const build = (key: string, n = 64) => (g: GraphBuilder) => {
    built.push(key);
    g.output('y', g.scale(g.input('x', [n]), Number(key)));
  };
  const run = (key: string, n = 64) => cache.use(key, build(key, n), (plan) => plan.run({ x: new Float32Array(n).fill(1) }));
  return { built, run, build };
}

describe('PlanCache', () => {
  it('keeps at most maxPlans plans, evicting the least recently used, and frees what it evicts', async () => {
    const gpu = await getGpu();
    const before = gpu.stats().liveBytes;
    const cache = new PlanCache(gpu, 'test', { maxPlans: 2 });
    const { built, run } = scaler(cache);
    for (const key of ['2', '3', '2', '4', '2', '3']) expect((await run(key)).outputs.y![0]).toBe(Number(key));
    // 2, 3 compiled; 2 touched; 4 evicts 3 (least recent); 2 hit; 3 again evicts 4.
    expect(built).toEqual(['2', '3', '4', '3']);
    expect(cache.size).toBe(2);
    expect(gpu.stats().liveBytes - before).toBe(cache.bytes);
    cache.dispose();
    expect(gpu.stats().liveBytes).toBe(before);
    await expect(run('2')).rejects.toThrow(/test: it was disposed/);
  });

  it('keeps at most maxBytes of plan buffers (a plan larger than that lives only while in use)', async () => {
    const gpu = await getGpu();
    const before = gpu.stats().liveBytes;
    const cache = new PlanCache(gpu, 'test', { maxBytes: 20_000 });
    const { built, run } = scaler(cache);
    await run('2', 1024);
    const one = cache.bytes;
    expect(one).toBeGreaterThan(8192); // input, output, staging of 4 KB each at least
    await run('3', 1024);
    expect(cache.size).toBe(1); // two do not fit: '2' went
    expect(cache.bytes).toBeLessThanOrEqual(20_000);
    await run('5', 8192);
    expect(cache.size).toBe(0); // bigger than the cap on its own: freed after its call
    expect(gpu.stats().liveBytes).toBe(before);
    expect(built).toEqual(['2', '3', '5']);
    cache.dispose();
  });

  it('never evicts a plan under a running call; dispose frees it at once and the call rejects', async () => {
    const gpu = await getGpu();
    const before = gpu.stats().liveBytes;
    const cache = new PlanCache(gpu, 'test', { maxPlans: 1 });
    const { run, build } = scaler(cache);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let held: GraphPlan | undefined;
    const slow = cache.use('7', build('7'), async (plan) => {
      held = plan;
      await gate;
      return plan.run({ x: new Float32Array(64).fill(1) });
    });
    while (!held) await new Promise((r) => setTimeout(r, 1));
    // Two other plans come and go while '7' is busy: each is freed after its own call, since the
    // busy '7' is the least recently used but cannot go.
    expect((await run('2')).outputs.y![0]).toBe(2);
    expect((await run('3')).outputs.y![0]).toBe(3);
    expect(cache.size).toBe(1);
    release();
    expect((await slow).outputs.y![0]).toBe(7);
    // The owner goes away during a run: the plan is freed at once, the run says so.
    const busy = cache.use('7', build('7'), (plan) => plan.run({ x: new Float32Array(64).fill(1) }));
    cache.dispose();
    await expect(busy).rejects.toThrow(/disposed/);
    expect(gpu.stats().liveBytes).toBe(before);
  });

  it('checks its limits; documented defaults', async () => {
    const gpu = await getGpu();
    expect(PLAN_CACHE_DEFAULTS).toEqual({ maxPlans: 32, maxBytes: 256 * 2 ** 20 });
    expect(new PlanCache(gpu, 'x').limits).toEqual(PLAN_CACHE_DEFAULTS);
    expect(() => new PlanCache(gpu, 'x', { maxPlans: 0 })).toThrow(/x: plan cache maxPlans must be a positive integer, got 0/);
    expect(() => new PlanCache(gpu, 'x', { maxBytes: NaN })).toThrow(/maxBytes must be a non-negative number/);
  });
});

// The kernels suite inside a page (bundled for the browser by bench/chromium.ts): the same cases,
// the same harness and the same peak measurement as `npm run bench -- kernels` in Node, on the
// page's navigator.gpu. Progress goes to the page console, which the Node side prints.
import '../src/platform/browser.js';
import { openGpu, type GpuInfo, type GpuProfile } from '../src/gpu/gpu.js';
import { matches, runCases, type BenchRow, type TimingSettings } from './harness.js';
import { measurePeak, PEAK_FULL, PEAK_QUICK, type Peak } from './peak.js';
import * as registry from './kernels/index.js';

export interface PageSuiteResult {
  adapter: GpuInfo;
  profile: GpuProfile;
  source: 'timestamp' | 'wall';
  peak: Peak;
  rows: BenchRow[];
}

export async function kernelsSuite(options: { settings: TimingSettings; quick: boolean; filter?: string; profile?: GpuProfile }): Promise<PageSuiteResult> {
  const gpu = await openGpu({ profile: options.profile });
  try {
    const log = (line: string) => console.log(line);
    const source = gpu.features.has('timestamp-query') ? 'timestamp' : 'wall';
    log(`adapter: ${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.description}; profile ${gpu.profile}; timing: ${source === 'timestamp' ? 'timestamp queries' : 'wall clock'}`);
    const peak = await measurePeak(gpu, options.settings, options.quick ? PEAK_QUICK : PEAK_FULL);
    log(`peak: f32 FMA ${peak.gflops.toPrecision(3)} GFLOP/s, copy ${peak.gbps.toPrecision(3)} GB/s`);
    const cases = Object.values(registry).flat().filter((c) => matches(options.filter, c.kernel.name, c.label));
    const rows = await runCases(gpu, cases, { settings: options.settings, peak }, log);
    return { adapter: gpu.info, profile: gpu.profile, source, peak, rows };
  } finally {
    gpu.close();
  }
}

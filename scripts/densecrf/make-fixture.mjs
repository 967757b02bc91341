// Writes test/fixtures/densecrf.json: inputs and densecrf's marginals (scripts/densecrf/oracle.cpp,
// whose first argument is the built oracle binary) for CaR-like scenes: a noisy disc on a gradient,
// CaR's colours (crfColors) and CAMs through crfProbabilitiesFromCams. Needs `npm run build`.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { crfColors, crfProbabilitiesFromCams } from '../../dist/index.js';

const oracle = process.argv[2];
if (!oracle) throw new Error('usage: node scripts/densecrf/make-fixture.mjs <oracle binary>');

/** xorshift32 in [0, 1), as test/util/random.ts. */
function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

function scene(width, height, r) {
  const out = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    const [x, y] = [i % width, Math.floor(i / width)];
    const disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 3) ** 2;
    for (let c = 0; c < 3; c++) out[4 * i + c] = Math.round((disc ? 200 - 30 * c : 40 + (80 * x) / width + 10 * c) + 16 * (r() - 0.5));
    out[4 * i + 3] = 255;
  }
  return out;
}

/** CAMs: the first a soft disc near the scene's, the rest random blobs; plus noise; in [0, 1]. */
function cams(width, height, k, r) {
  const out = new Float32Array(k * width * height);
  for (let c = 0; c < k; c++) {
    const [cx, cy, s] = c === 0 ? [width / 2 + 2, height / 2 - 1, height / 3] : [r() * width, r() * height, 3 + 4 * r()];
    for (let i = 0; i < width * height; i++) {
      const [x, y] = [i % width, Math.floor(i / width)];
      out[c * width * height + i] = Math.min(1, Math.max(0, 0.8 * Math.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (s * s))) + 0.3 * r()));
    }
  }
  return out;
}

const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const cases = [];
for (const [width, height, k, seed] of [[32, 24, 1, 1], [40, 30, 3, 2], [23, 17, 5, 3]]) {
  const r = rng(seed);
  const colors = crfColors(scene(width, height, r), width, height, 'car');
  const probabilities = crfProbabilitiesFromCams(cams(width, height, k, r), width, height);
  const input = Buffer.concat([Buffer.from(new Int32Array([width, height, k + 1]).buffer), Buffer.from(colors), Buffer.from(probabilities.buffer)]);
  const run = spawnSync(oracle, { input, maxBuffer: 1 << 28 });
  if (run.status !== 0) throw new Error(`oracle failed: ${run.stderr}`);
  const q = new Float32Array(run.stdout.buffer.slice(run.stdout.byteOffset, run.stdout.byteOffset + run.stdout.byteLength));
  if (q.length !== probabilities.length) throw new Error(`oracle wrote ${q.length} values, expected ${probabilities.length}`);
  cases.push({ width, height, labels: k + 1, colors: b64(colors), probabilities: b64(probabilities), q: b64(q) });
}
const out = fileURLToPath(new URL('../../test/fixtures/densecrf.json', import.meta.url));
const about = 'densecrf (the C++ vendored by pydensecrf 1.0, lucasb-eyer/pydensecrf at 2723c7f, SSE build, g++ -O2 x86-64) marginals after 10 mean-field iterations with CaR settings; colours [N,3] uint8 as passed to addPairwiseBilateral (CaR wrapped BGR), probabilities/q [L,N] f32 label-major, base64 little-endian; made by scripts/densecrf/make-fixture.mjs';
writeFileSync(out, JSON.stringify({ about, cases }, null, 1) + '\n');
console.log(`wrote ${out}: ${cases.length} cases`);

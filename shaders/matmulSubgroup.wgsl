// register_subgroup: the register kernel for CPU adapters with subgroups of at least 8 lanes
// (lavapipe). Appended to shaders/matmul.wgsl (whose bindings and helpers it uses) and compiled
// with `enable subgroups;`; same shapes as register_vec4 (!TRANS_A, K % 4 == 0, TRANS_B or
// N % 4 == 0), same 4 columns per invocation, ROWS any number up to 2 MAX_ROWS.
//
// Why: llvmpipe (Mesa 25.0) loads every address here lane by lane (see matmul.wgsl), a's too,
// although each lane of register_vec4 reads the same rows of a: loads, not FMAs, bound it. Here
// each of the first 8 lanes loads one row of a (a vec4 of depth) and subgroupBroadcast (an extract
// and a splat) hands it to the others, so a's loads drop 8-fold and one lane's loads of b serve up
// to 32 rows. At CLIP's MLP fc1 on lavapipe (GFLOP/s, one run): 50x768x3072 17 -> 25, 400x768x3072
// 21 -> 29 going from 16 rows x 2 columns to 32 x 4 (8 x 4 was slower than both); unrolling k by 2
// was slower; the workgroup size (8, 16, 32) did not matter.
// No faster or slower there (one-process A/B at 50x768x3072, outputs identical): b through an
// rgba32float texture (llvmpipe calls a texel-fetch function per textureLoad), a through a uniform
// buffer (branch-free gathers, 16% fewer instructions, same time), all 50 rows in one block,
// no guards on the row groups. The same loads with half the FMAs took ~3/4 of the time: the loads
// (b's most) cost more than the FMAs, which run near the measured peak.
@compute @workgroup_size(WG)
fn register_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let col = (wid.x * WG + lid) * 4u;
  let blk = row_block(wid, nwg, ROWS);
  // No return for columns past N: subgroupBroadcast needs the whole subgroup. Those lanes read
  // clamped columns and store nothing.
  if (blk.batch >= p.batch) { return; }
  let v = vec_block(blk);
  let last = p.N - 1u;
  let bt = v.b0 + vec4u(min(col, last), min(col + 1u, last), min(col + 2u, last), min(col + 3u, last)) * v.k4;
  // Rows 0..15 of the block in lo, 16..31 in hi (two arrays: pick() takes MAX_ROWS).
  var lo: array<vec4f, MAX_ROWS>;
  var hi: array<vec4f, MAX_ROWS>;
  for (var k = 0u; k < v.k4; k++) {
    let bm = b_block(v, bt, min(col, last & ~3u), k);
    // Straight-line code, no loop over the groups of 8 rows: NIR does not unroll a loop that long,
    // and indexing the accumulators with its counter would move them to memory (4x slower).
    // The rows of a group are ROWS - 8g, at most 8: constants, so a last group of fewer than 8
    // rows has fewer FMAs. A group wholly past M (in a batch's last block) only skips its loads:
    // llvmpipe runs both sides of a branch under a mask, hence the row count fixed per pipeline.
    lo = fma_rows8(a_rows8(v, 0u, lane, k), bm, lo, 0u, ROWS);
    if (ROWS > 8u && blk.row0 + 8u < p.M) { lo = fma_rows8(a_rows8(v, 1u, lane, k), bm, lo, 8u, ROWS - 8u); }
    if (ROWS > 16u && blk.row0 + 16u < p.M) { hi = fma_rows8(a_rows8(v, 2u, lane, k), bm, hi, 0u, ROWS - 16u); }
    if (ROWS > 24u && blk.row0 + 24u < p.M) { hi = fma_rows8(a_rows8(v, 3u, lane, k), bm, hi, 8u, ROWS - 24u); }
  }
  let rows = min(ROWS, p.M - blk.row0);
  for (var i = 0u; i < rows * 4u; i++) {
    let r = i / 4u;
    let row = select(pick(hi, r - 16u, MAX_ROWS), pick(lo, r, min(ROWS, MAX_ROWS)), r < 16u);
    store(v.row0 + r, col + i % 4u, row[i % 4u]);
  }
}

// This lane's row of group g (rows 8g..8g + 7 of the block, one per lane; lanes past 8 repeat
// them) at depths 4k..4k + 3. Lanes past the block's rows load nothing; rows past M re-read the
// last row of a and are never stored.
fn a_rows8(v: VecBlock, g: u32, lane: u32, k: u32) -> vec4f {
  var al = vec4f(0.0);
  if (lane % 8u < ROWS - 8u * g) { al = vec4f(a4[min(v.row0 + 8u * g + lane % 8u, v.last_row) * v.k4 + k]); }
  return al;
}

// acc with acc[base + j] += row j of the `n` (a constant) held by lanes 0..n-1 in `al` (one vec4
// of depth each) times bm. By value, not through a pointer: with a pointer the arrays stayed in
// memory (2x slower).
fn fma_rows8(al: vec4f, bm: mat4x4f, acc: array<vec4f, MAX_ROWS>, base: u32, n: u32) -> array<vec4f, MAX_ROWS> {
  var r = acc;
  r[base] = fma4(subgroupBroadcast(al, 0u), bm, r[base]);
  if (n > 1u) { r[base + 1u] = fma4(subgroupBroadcast(al, 1u), bm, r[base + 1u]); }
  if (n > 2u) { r[base + 2u] = fma4(subgroupBroadcast(al, 2u), bm, r[base + 2u]); }
  if (n > 3u) { r[base + 3u] = fma4(subgroupBroadcast(al, 3u), bm, r[base + 3u]); }
  if (n > 4u) { r[base + 4u] = fma4(subgroupBroadcast(al, 4u), bm, r[base + 4u]); }
  if (n > 5u) { r[base + 5u] = fma4(subgroupBroadcast(al, 5u), bm, r[base + 5u]); }
  if (n > 6u) { r[base + 6u] = fma4(subgroupBroadcast(al, 6u), bm, r[base + 6u]); }
  if (n > 7u) { r[base + 7u] = fma4(subgroupBroadcast(al, 7u), bm, r[base + 7u]); }
  return r;
}

// register_subgroup: the register kernel for CPU adapters with subgroups of at least 8 lanes
// (lavapipe). Appended to shaders/matmul.wgsl (whose bindings, store() and row_block() it uses),
// and compiled with `enable subgroups;`; same conditions as register_vec4 (!TRANS_A, K % 4 == 0,
// TRANS_B or N % 4 == 0).
//
// Why: llvmpipe (Mesa 25.0) treats an SSBO address as uniform only when it is built from constants
// and push constants, so every load here, a's too, is done lane by lane (about ten instructions an
// element, with a bounds check and a branch each), and loads, not FMAs, bound register_vec4, where
// every lane loads the same ROWS rows of a. Here each of the first 8 lanes loads one row of a and
// subgroupBroadcast (an extract and a splat) hands it to the others: a's loads drop 8-fold. Each
// invocation owns ROWS rows (a multiple of 8) x 2 columns, so one lane's loads of b serve ROWS
// rows; accumulators pair two rows x two columns in a vec4.
@compute @workgroup_size(WG)
fn register_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let col = (wid.x * WG + lid) * 2u;
  let blk = row_block(wid, nwg, ROWS);
  // No return for columns past N: subgroupBroadcast needs the whole subgroup. Those lanes read
  // clamped columns and store nothing.
  if (blk.batch >= p.batch) { return; }
  let v = vec_block(blk);
  let last = p.N - 1u;
  let bt = v.b0 + vec2u(min(col, last), min(col + 1u, last)) * v.k4;
  let half = (col & 2u) != 0u;     // without TRANS_B: which half of b's vec4 holds the 2 columns
  var acc: array<vec4f, MAX_ROWS>;   // ROWS / 2 used
  for (var k = 0u; k < v.k4; k++) {
    // bm[i]: the 2 columns at depth 4k + i, twice (for the two rows of an accumulator).
    var bm: mat4x4f;
    if (TRANS_B) {
      let c0 = vec4f(b4[bt.x + k]);
      let c1 = vec4f(b4[bt.y + k]);
      bm = mat4x4f(vec4f(c0.x, c1.x, c0.x, c1.x), vec4f(c0.y, c1.y, c0.y, c1.y),
                   vec4f(c0.z, c1.z, c0.z, c1.z), vec4f(c0.w, c1.w, c0.w, c1.w));
    } else {
      let i = v.b0 + 4u * k * v.n4 + min(col, last) / 4u;
      for (var d = 0u; d < 4u; d++) {
        let q = vec4f(b4[i + d * v.n4]);
        let c = select(q.xy, q.zw, half);
        bm[d] = c.xyxy;
      }
    }
    for (var g = 0u; g < ROWS / 8u; g++) {
      // Rows past M re-read the last row of a; they are never stored.
      let al = vec4f(a4[min(v.row0 + 8u * g + lane % 8u, v.last_row) * v.k4 + k]);
      acc[4u * g] = fma_pair(subgroupBroadcast(al, 0u), subgroupBroadcast(al, 1u), bm, acc[4u * g]);
      acc[4u * g + 1u] = fma_pair(subgroupBroadcast(al, 2u), subgroupBroadcast(al, 3u), bm, acc[4u * g + 1u]);
      acc[4u * g + 2u] = fma_pair(subgroupBroadcast(al, 4u), subgroupBroadcast(al, 5u), bm, acc[4u * g + 2u]);
      acc[4u * g + 3u] = fma_pair(subgroupBroadcast(al, 6u), subgroupBroadcast(al, 7u), bm, acc[4u * g + 3u]);
    }
  }
  // acc[j] holds rows 2j, 2j + 1 x columns col, col + 1: element i = 2 row + column is acc[i / 4][i % 4].
  let rows = min(ROWS, p.M - blk.row0);
  for (var i = 0u; i < rows * 2u; i++) { store(v.row0 + i / 2u, col + i % 2u, pick(acc, i / 4u, ROWS / 2u)[i % 4u]); }
}

// acc + (row r0, row r0, row r1, row r1) * bm over 4 depths, as fused multiply-adds (see fma4).
fn fma_pair(r0: vec4f, r1: vec4f, bm: mat4x4f, acc: vec4f) -> vec4f {
  return fma(vec4f(r0.w, r0.w, r1.w, r1.w), bm[3], fma(vec4f(r0.z, r0.z, r1.z, r1.z), bm[2],
         fma(vec4f(r0.y, r0.y, r1.y, r1.y), bm[1], fma(vec4f(r0.x, r0.x, r1.x, r1.x), bm[0], acc))));
}

// Matrix product with a fused epilogue: out[m, n] = act(sum_k a[m, k] b[k, n] + bias[n]) + residual[m, n],
// for each of `batch` matrices. a is [batch, M, K], or [batch, K, M] when TRANS_A (weight gradients
// Aᵀ·dY, which contract over the rows of both operands); b is [batch, K, N], or [batch, N, K] when
// TRANS_B (PyTorch Linear weights, read in place). A b shared by every batch comes with batch = 1
// and the batches folded into M. Accumulation is f32 whatever the storage type T. Rows of out and
// residual are indexed globally (batch * M + row), as are those of a without TRANS_A.
//
// Entry points over the same bindings:
//   register_vec4    !TRANS_A, K % 4 == 0 and (TRANS_B or N % 4 == 0): vec4 loads, no workgroup memory.
//   register_subgroup  the same shapes, with subgroups: shaders/matmulSubgroup.wgsl, appended.
//   register_scalar  any shape: the same blocking with scalar loads.
//   tiled            any shape: workgroup-memory tiles, for GPUs.
//   gemv             M <= MAX_ROWS (pooled tokens, batch-1 heads), for GPUs: all rows at once,
//                    the K loop split over the invocations of a workgroup.
// The register kernels suit CPU adapters (lavapipe, SwiftShader), where barriers and workgroup
// memory are expensive and one workgroup runs as SIMD lanes on one thread: each invocation keeps
// ROWS rows x 4 columns of the output in registers, and all invocations of a workgroup share their
// rows. On lavapipe, vec4 loads were ~1.5x faster than four scalar loads, hence the separate
// aligned entry point. llvmpipe (Mesa 25.0) loads an SSBO address once for the whole SIMD group
// only when it is built from constants and push constants (nir_src_is_always_uniform); every other
// address, a's here too although it is the same in every lane, is loaded lane by lane, each
// element behind its own bounds check and branch (seen in the JIT code with perf, 2026-12-03).
// That check is llvmpipe's, so Dawn's disable_robustness toggle changed nothing measurable, and
// ovgpu does not offer it. Loads, not FMAs, bound these kernels there (without any loads in the
// loop, the same FMAs ran at ~1.1x the measured FMA peak).
alias T = f32;

struct Params {
  M: u32,          // rows per batch
  N: u32,
  K: u32,
  batch: u32,
}

const MAX_ROWS = 16u;
override ROWS: u32 = 8u;          // register: output rows per invocation (at most MAX_ROWS)
override WG: u32 = 16u;           // register: invocations per workgroup, 4 output columns each
override WG_X: u32 = 16u;         // tiled: workgroup width; each invocation computes 4x4 outputs
override WG_Y: u32 = 16u;         // tiled: workgroup height
override TILE_K: u32 = 16u;       // tiled: depth of the tiles staged in workgroup memory
override KS: u32 = 32u;           // gemv: slices of K per workgroup
override CQ: u32 = 8u;            // gemv: groups of 4 columns per workgroup
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override HAS_RESIDUAL: bool = false;
override ACTIVATION: u32 = 0u;    // as activate(): 0 none, 1 gelu, 2 quick_gelu
// Backward epilogue: out = residual * act'(a·b + bias), the gradient at the pre-activation with
// the upstream gradient bound as `residual` (the pre-activation is recomputed, not stored).
override ACTIVATION_GRAD: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;       // a again when there is no bias
@group(0) @binding(4) var<storage, read> residual: array<T>;   // a again when there is no residual
@group(0) @binding(5) var<storage, read_write> out: array<T>;
// The same a and b seen as vec4s. Different entry points may declare the same binding.
@group(0) @binding(1) var<storage, read> a4: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<T>>;

// Writes one output element through the epilogue, if it exists.
fn store(row: u32, n: u32, acc: f32) {
  if (n >= p.N) { return; }
  var v = acc;
  if (HAS_BIAS) { v += f32(bias[n]); }
  if (ACTIVATION_GRAD) {
    out[row * p.N + n] = T(f32(residual[row * p.N + n]) * activate_grad(v, ACTIVATION));
    return;
  }
  v = activate(v, ACTIVATION);
  if (HAS_RESIDUAL) { v += f32(residual[row * p.N + n]); }
  out[row * p.N + n] = T(v);
}

// Where a workgroup's rows lie: y counts blocks of `rows` rows, batch after batch, and may be
// folded into z when it exceeds the per-dimension workgroup limit (blocks past the end are skipped).
struct Block {
  batch: u32,   // batch index (>= p.batch: nothing to do)
  row0: u32,    // first row inside the batch
}

fn row_block(wid: vec3u, nwg: vec3u, rows: u32) -> Block {
  let y = wid.z * nwg.y + wid.y;
  let per_batch = (p.M + rows - 1u) / rows;
  return Block(y / per_batch, (y % per_batch) * rows);
}

// A row block as the vec4 register kernels (register_vec4, register_subgroup) address it.
struct VecBlock {
  row0: u32,       // first row, counted globally (batch * M + row)
  last_row: u32,   // the batch's last row: rows past M re-read it and are never stored
  k4: u32,         // K / 4
  n4: u32,         // N / 4
  b0: u32,         // this batch's b, in vec4s
}

fn vec_block(blk: Block) -> VecBlock {
  return VecBlock(blk.batch * p.M + blk.row0, blk.batch * p.M + p.M - 1u, p.K / 4u, p.N / 4u, blk.batch * p.N * (p.K / 4u));
}

// acc + bm * av as fused multiply-adds, where the adapter fuses them. llvmpipe (Mesa 25.0) does
// not: its JIT code holds a vmulps and a vaddps per fma(), and its scheduler hoists the
// multiplies and spills their products to the stack.
fn fma4(av: vec4f, bm: mat4x4f, acc: vec4f) -> vec4f {
  return fma(vec4f(av.w), bm[3], fma(vec4f(av.z), bm[2], fma(vec4f(av.y), bm[1], fma(vec4f(av.x), bm[0], acc))));
}

// acc[r] for a run-time r, by constant indices only: indexing the array with r itself would move
// the whole accumulator out of registers, for the main loop too. `n` is a constant (ROWS, 4).
fn pick(acc: array<vec4f, MAX_ROWS>, r: u32, n: u32) -> vec4f {
  var v = acc[0];
  for (var t = 1u; t < n; t++) { if (t == r) { v = acc[t]; } }
  return v;
}

// b's 4 columns (col.. with col % 4 == 0; their rows `bt` with TRANS_B) at depths 4k..4k + 3:
// bm[i] holds depth 4k + i (a transpose is free: a vec4 is 4 SIMD registers).
fn b_block(v: VecBlock, bt: vec4u, col: u32, k: u32) -> mat4x4f {
  if (TRANS_B) {
    return transpose(mat4x4f(vec4f(b4[bt.x + k]), vec4f(b4[bt.y + k]), vec4f(b4[bt.z + k]), vec4f(b4[bt.w + k])));
  }
  let i = v.b0 + 4u * k * v.n4 + col / 4u;
  return mat4x4f(vec4f(b4[i]), vec4f(b4[i + v.n4]), vec4f(b4[i + 2u * v.n4]), vec4f(b4[i + 3u * v.n4]));
}

@compute @workgroup_size(WG)
fn register_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let col = (wid.x * WG + lid) * 4u;
  let blk = row_block(wid, nwg, ROWS);
  if (col >= p.N || blk.batch >= p.batch) { return; }
  let v = vec_block(blk);
  // Columns past N (only possible with TRANS_B) re-read the last row of b; they are never stored.
  let last = p.N - 1u;
  let bt = v.b0 + vec4u(min(col, last), min(col + 1u, last), min(col + 2u, last), min(col + 3u, last)) * v.k4;
  var acc: array<vec4f, MAX_ROWS>;
  for (var k = 0u; k < v.k4; k++) {
    let bm = b_block(v, bt, col, k);
    for (var r = 0u; r < ROWS; r++) {
      // Rows past M re-read the last row of a; they are never stored.
      let av = vec4f(a4[min(v.row0 + r, v.last_row) * v.k4 + k]);
      acc[r] = fma4(av, bm, acc[r]);
    }
  }
  // One rolled loop with a run-time bound: unrolled per element, the epilogue (exp in the
  // activations) made pipelines up to 5x slower to compile on lavapipe, for no speed gain.
  let rows = min(ROWS, p.M - blk.row0);
  for (var i = 0u; i < rows * 4u; i++) { store(v.row0 + i / 4u, col + i % 4u, pick(acc, i / 4u, ROWS)[i % 4u]); }
}

// Element (row, k) of batch `batch`'s a, in either layout.
fn a_at(batch: u32, row: u32, k: u32) -> f32 {
  if (TRANS_A) { return f32(a[(batch * p.K + k) * p.M + row]); }
  return f32(a[(batch * p.M + row) * p.K + k]);
}

// Four columns of b at depth k, one element each (no vec4 alignment needed), in either layout.
fn b_cols(b0: u32, cols: vec4u, k: u32) -> vec4f {
  let i = select(b0 + k * p.N + cols, b0 + cols * p.K + k, TRANS_B);
  return vec4f(f32(b[i.x]), f32(b[i.y]), f32(b[i.z]), f32(b[i.w]));
}

@compute @workgroup_size(WG)
fn register_scalar(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let col = (wid.x * WG + lid) * 4u;
  let blk = row_block(wid, nwg, ROWS);
  if (col >= p.N || blk.batch >= p.batch) { return; }
  let row0 = blk.batch * p.M + blk.row0;
  let b0 = blk.batch * p.N * p.K;
  let last = p.N - 1u;
  let cols = vec4u(col, min(col + 1u, last), min(col + 2u, last), min(col + 3u, last));
  var acc: array<vec4f, MAX_ROWS>;
  for (var k = 0u; k < p.K; k++) {
    let bv = b_cols(b0, cols, k);
    for (var r = 0u; r < ROWS; r++) {
      acc[r] = fma(vec4f(a_at(blk.batch, min(blk.row0 + r, p.M - 1u), k)), bv, acc[r]);
    }
  }
  let rows = min(ROWS, p.M - blk.row0);
  for (var i = 0u; i < rows * 4u; i++) { store(row0 + i / 4u, col + i % 4u, pick(acc, i / 4u, ROWS)[i % 4u]); }
}

// Tiled: a workgroup computes a (4 WG_Y) x (4 WG_X) output tile, staging TILE_K-deep slices of a
// and b in workgroup memory; each invocation owns a 4x4 block of the tile.
override TILE_M = 4u * WG_Y;
override TILE_N = 4u * WG_X;
var<workgroup> a_tile: array<f32, TILE_M * TILE_K>;   // [TILE_M][TILE_K]
var<workgroup> b_tile: array<f32, TILE_K * TILE_N>;   // [TILE_K][TILE_N]

@compute @workgroup_size(WG_X, WG_Y)
fn tiled(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) li: u32) {
  let col0 = wid.x * TILE_N;
  let blk = row_block(wid, nwg, TILE_M);
  // Uniform per workgroup, so returning early keeps the barriers uniform.
  if (blk.batch >= p.batch) { return; }
  let row0 = blk.row0;            // inside the batch
  let a0 = blk.batch * p.M;       // the batch's first row of a and out
  let b0 = blk.batch * p.N * p.K;
  let threads = WG_X * WG_Y;
  var acc: array<vec4f, MAX_ROWS>;  // 4 used
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    // Cooperative loads, consecutive invocations reading consecutive addresses; zeros outside.
    for (var i = li; i < TILE_M * TILE_K; i += threads) {
      let m = row0 + i / TILE_K;
      let k = k0 + i % TILE_K;
      var v = 0.0;
      if (m < p.M && k < p.K) { v = a_at(blk.batch, m, k); }
      a_tile[i] = v;
    }
    for (var i = li; i < TILE_K * TILE_N; i += threads) {
      var kk: u32;
      var nn: u32;
      if (TRANS_B) { kk = i % TILE_K; nn = i / TILE_K; } else { kk = i / TILE_N; nn = i % TILE_N; }
      let k = k0 + kk;
      let n = col0 + nn;
      var v = 0.0;
      if (k < p.K && n < p.N) {
        if (TRANS_B) { v = f32(b[b0 + n * p.K + k]); } else { v = f32(b[b0 + k * p.N + n]); }
      }
      b_tile[kk * TILE_N + nn] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TILE_K; kk++) {
      let bo = kk * TILE_N + lid.x * 4u;
      let bv = vec4f(b_tile[bo], b_tile[bo + 1u], b_tile[bo + 2u], b_tile[bo + 3u]);
      for (var r = 0u; r < 4u; r++) {
        acc[r] += a_tile[(lid.y * 4u + r) * TILE_K + kk] * bv;
      }
    }
    workgroupBarrier();
  }
  let col = col0 + lid.x * 4u;
  let row = row0 + lid.y * 4u;
  let rows = select(0u, min(4u, p.M - row), row < p.M);
  for (var i = 0u; i < rows * 4u; i++) { store(a0 + row + i / 4u, col + i % 4u, pick(acc, i / 4u, 4u)[i % 4u]); }
}

// gemv: a workgroup computes ROWS (>= M) rows x 4·CQ columns. Its KS·CQ invocations each own 4
// columns and every KS-th k (consecutive invocations read consecutive addresses of b: along the
// columns, or along k when TRANS_B), then the KS partial sums are added through workgroup memory,
// one row at a time. Rows and columns past the end are computed from clamped reads, never stored.
// (Not tuned on hardware here.)
var<workgroup> partial: array<vec4f, KS * CQ>;

@compute @workgroup_size(KS * CQ)
fn gemv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let blk = row_block(wid, nwg, ROWS);
  // Uniform per workgroup, so returning early keeps the barriers uniform.
  if (blk.batch >= p.batch) { return; }
  var ks: u32;
  var cq: u32;
  if (TRANS_B) { ks = li % KS; cq = li / KS; } else { ks = li / CQ; cq = li % CQ; }
  let col = (wid.x * CQ + cq) * 4u;
  let b0 = blk.batch * p.N * p.K;
  let last = p.N - 1u;
  let cols = vec4u(min(col, last), min(col + 1u, last), min(col + 2u, last), min(col + 3u, last));
  var acc: array<vec4f, MAX_ROWS>;
  for (var k = ks; k < p.K; k += KS) {
    let bv = b_cols(b0, cols, k);
    for (var r = 0u; r < ROWS; r++) {
      acc[r] += a_at(blk.batch, min(blk.row0 + r, p.M - 1u), k) * bv;
    }
  }
  // A rolled loop (rows is uniform across the workgroup, so its barriers are too): unrolled, the
  // epilogue and the KS-long sum would be repeated ROWS times.
  let rows = min(ROWS, p.M - blk.row0);
  for (var r = 0u; r < rows; r++) {
    partial[li] = pick(acc, r, ROWS);
    workgroupBarrier();
    if (ks == 0u && col < p.N) {
      var sum = vec4f(0.0);
      for (var s = 0u; s < KS; s++) {
        if (TRANS_B) { sum += partial[cq * KS + s]; } else { sum += partial[s * CQ + cq]; }
      }
      for (var t = 0u; t < 4u; t++) { store(blk.batch * p.M + blk.row0 + r, col + t, sum[t]); }
    }
    workgroupBarrier();
  }
}

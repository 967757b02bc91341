// Region–word similarity: logits[b, r, q] from cosine similarity of regions[b, r, :] and
// words[b or 0, q, :] (each row divided by its norm + 1e-6, as OWL-ViT's class head), then
//   CLIP (OWL = false): multiplier · cos, with multiplier = exp(logit_scale) from the host;
//   OWL-ViT (OWL = true): (cos + shift[b, r]) · (elu(scale[b, r]) + 1);
// and, with HAS_MASK, -1e6 where mask[b or 0, q] == 0 (a padded query).
// `main`: each invocation computes a 4 × 4 tile of (region, query) pairs, accumulating the dot
// products and both rows' squared norms in one pass over D. `top_k`: one invocation per (b, r)
// row keeps the k largest logits (ties: lower query index first) by insertion.
// Both run over one chunk: images [b_first, b_end), regions [r_first, r_end), queries
// [q_first, q_end), all of them unless the host split the call at the binding limit; then the
// tensors may be bound from an element `*_base` on, which indices subtract (0 when bound whole).
alias T = f32;

struct Params {
  batch: u32,
  regions: u32,       // R
  queries: u32,       // Q
  dim: u32,           // D
  words_stride: u32,  // Q · D, or 0 when words are shared by every image
  mask_stride: u32,   // Q, or 0 when the mask is shared
  top_k: u32,
  multiplier: f32,
  b_first: u32,
  b_end: u32,
  r_first: u32,
  r_end: u32,
  q_first: u32,
  q_end: u32,
  regions_base: u32,  // regions
  words_base: u32,    // words
  rows_base: u32,     // shift and scale
  logits_base: u32,   // logits
  top_base: u32,      // top_values and top_indices
}

override OWL: bool = false;
override HAS_MASK: bool = false;
override WGX: u32 = 8u;
override WGY: u32 = 8u;
const TILE = 4u;
const MAX_K = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> regions: array<T>;
@group(0) @binding(2) var<storage, read> words: array<T>;
@group(0) @binding(3) var<storage, read> shift: array<T>;
@group(0) @binding(4) var<storage, read> scale: array<T>;
@group(0) @binding(5) var<storage, read> mask: array<u32>;  // i32 or u32 data: 0 = padded
@group(0) @binding(6) var<storage, read_write> logits: array<f32>;
@group(0) @binding(7) var<storage, read_write> top_values: array<f32>;
@group(0) @binding(8) var<storage, read_write> top_indices: array<i32>;

fn elu(x: f32) -> f32 {
  return select(exp(x) - 1.0, x, x > 0.0);
}

@compute @workgroup_size(WGX, WGY)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let q0 = p.q_first + gid.x * TILE;
  let r0 = p.r_first + gid.y * TILE;
  let b = p.b_first + gid.z;
  if (q0 >= p.q_end || r0 >= p.r_end) { return; }
  // Rows past the end re-read the last row; their results are not written.
  var rrow: array<u32, 4>;
  var qrow: array<u32, 4>;
  for (var i = 0u; i < TILE; i++) {
    rrow[i] = (b * p.regions + min(r0 + i, p.r_end - 1u)) * p.dim - p.regions_base;
    qrow[i] = b * p.words_stride + min(q0 + i, p.q_end - 1u) * p.dim - p.words_base;
  }
  var acc: array<vec4f, 4>;
  var rnorm = vec4f(0.0);
  var qnorm = vec4f(0.0);
  for (var d = 0u; d < p.dim; d++) {
    let rv = vec4f(f32(regions[rrow[0] + d]), f32(regions[rrow[1] + d]), f32(regions[rrow[2] + d]), f32(regions[rrow[3] + d]));
    let qv = vec4f(f32(words[qrow[0] + d]), f32(words[qrow[1] + d]), f32(words[qrow[2] + d]), f32(words[qrow[3] + d]));
    for (var i = 0u; i < TILE; i++) { acc[i] += rv[i] * qv; }
    rnorm += rv * rv;
    qnorm += qv * qv;
  }
  let rinv = 1.0 / (sqrt(rnorm) + 1e-6);
  let qinv = 1.0 / (sqrt(qnorm) + 1e-6);
  for (var i = 0u; i < TILE; i++) {
    let r = r0 + i;
    if (r >= p.r_end) { break; }
    var add = 0.0;
    var mul = p.multiplier;
    if (OWL) {
      add = f32(shift[b * p.regions + r - p.rows_base]);
      mul = elu(f32(scale[b * p.regions + r - p.rows_base])) + 1.0;
    }
    for (var j = 0u; j < TILE; j++) {
      let q = q0 + j;
      if (q >= p.q_end) { break; }
      var v = (acc[i][j] * rinv[i] * qinv[j] + add) * mul;
      if (HAS_MASK && mask[b * p.mask_stride + q] == 0u) { v = -1e6; }
      logits[(b * p.regions + r) * p.queries + q - p.logits_base] = v;
    }
  }
}

@compute @workgroup_size(64)
fn top_k(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let at_chunk = (wid.y * nwg.x + wid.x) * 64u + lid;
  let chunk_regions = p.r_end - p.r_first;
  if (at_chunk >= (p.b_end - p.b_first) * chunk_regions) { return; }
  let row = (p.b_first + at_chunk / chunk_regions) * p.regions + p.r_first + at_chunk % chunk_regions;
  var vals: array<f32, MAX_K>;
  var idx: array<i32, MAX_K>;
  var n = 0u;
  for (var q = 0u; q < p.queries; q++) {
    let v = logits[row * p.queries + q - p.logits_base];
    if (n == p.top_k && !(v > vals[n - 1u])) { continue; }
    // Shift smaller entries down (dropping the last when full), then insert.
    var at = min(n, p.top_k - 1u);
    while (at > 0u && v > vals[at - 1u]) {
      vals[at] = vals[at - 1u];
      idx[at] = idx[at - 1u];
      at--;
    }
    vals[at] = v;
    idx[at] = i32(q);
    n = min(n + 1u, p.top_k);
  }
  for (var i = 0u; i < p.top_k; i++) {
    top_values[row * p.top_k + i - p.top_base] = vals[i];
    top_indices[row * p.top_k + i - p.top_base] = idx[i];
  }
}

// ---- Backward (regionWordSimilarityBackward): d regions, d words, (OWL) d shift, d scale ----
// With ê = e / (|e| + 1e-6), ŵ likewise, cos = ê · ŵ and G[b, r, q] = dy · multiplier (the
// derivative of the logit by cos; 0 for a masked query, whose logit is a constant):
//   d shift[r] = sum_q G,   d scale[r] = sum_q dy (cos + shift) elu'(scale),
//   d e_r = (sum_q G ŵ_q - e_r · S_r / |e_r|) / (|e_r| + 1e-6),  S_r = sum_q G cos,
//   d w_q = (sum_{b, r} G ê_r - w_q · T_q / |w_q|) / (|w_q| + 1e-6),  T_q = sum_{b, r} G cos
// (the l2-normalisation's backward; a zero row keeps only the first term). Five passes, each one
// invocation per output element summing in a fixed order (deterministic): row norms, then per pair
// cos and G, per region S (and d shift, d scale), then d regions and d words. Scratch `work`
// (f32): [|e| (B·R)][|w| (Bw·Q)][G (B·R·Q)][cos (B·R·Q)][S (B·R)].
@group(0) @binding(6) var<storage, read> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> work: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad: array<T>;
@group(0) @binding(9) var<storage, read_write> grad2: array<T>;

const EPS = 1e-6;

fn bw_index(wid: vec3u, nwg: vec3u, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }
fn words_batches() -> u32 { return select(p.batch, 1u, p.words_stride == 0u); }
fn pairs() -> u32 { return p.batch * p.regions * p.queries; }
fn at_wnorm() -> u32 { return p.batch * p.regions; }
fn at_g() -> u32 { return at_wnorm() + words_batches() * p.queries; }
fn at_cos() -> u32 { return at_g() + pairs(); }
fn at_s() -> u32 { return at_cos() + pairs(); }
fn word_row(b: u32, q: u32) -> u32 { return select(b, 0u, p.words_stride == 0u) * p.queries + q; }

@compute @workgroup_size(64)
fn bw_norms(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = bw_index(wid, nwg, lid);
  if (i >= at_g()) { return; }
  var s = 0.0;
  if (i < at_wnorm()) {
    for (var d = 0u; d < p.dim; d++) { let v = f32(regions[i * p.dim + d]); s += v * v; }
  } else {
    let row = i - at_wnorm();
    for (var d = 0u; d < p.dim; d++) { let v = f32(words[row * p.dim + d]); s += v * v; }
  }
  work[i] = sqrt(s);
}

fn multiplier_of(br: u32) -> f32 {
  if (OWL) { return elu(f32(scale[br])) + 1.0; }
  return p.multiplier;
}

@compute @workgroup_size(64)
fn bw_pairs(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = bw_index(wid, nwg, lid);
  if (i >= pairs()) { return; }
  let q = i % p.queries;
  let br = i / p.queries;
  let b = br / p.regions;
  let wr = word_row(b, q);
  var dot = 0.0;
  for (var d = 0u; d < p.dim; d++) { dot += f32(regions[br * p.dim + d]) * f32(words[wr * p.dim + d]); }
  let cos = dot / ((work[br] + EPS) * (work[at_wnorm() + wr] + EPS));
  let masked = HAS_MASK && mask[b * p.mask_stride + q] == 0u;
  work[at_cos() + i] = cos;
  work[at_g() + i] = select(dy[i] * multiplier_of(br), 0.0, masked);
}

@compute @workgroup_size(64)
fn bw_region_sums(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let br = bw_index(wid, nwg, lid);
  if (br >= p.batch * p.regions) { return; }
  var s = 0.0;
  var g_sum = 0.0;
  var d_scale = 0.0;
  let b = br / p.regions;
  for (var q = 0u; q < p.queries; q++) {
    let i = br * p.queries + q;
    let g = work[at_g() + i];
    let cos = work[at_cos() + i];
    s += g * cos;
    g_sum += g;
    if (OWL && !(HAS_MASK && mask[b * p.mask_stride + q] == 0u)) { d_scale += dy[i] * (cos + f32(shift[br])); }
  }
  work[at_s() + br] = s;
  if (OWL) {
    let x = f32(scale[br]);
    grad[br] = T(g_sum);
    grad2[br] = T(d_scale * select(exp(x), 1.0, x > 0.0));
  }
}

@compute @workgroup_size(64)
fn bw_regions(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = bw_index(wid, nwg, lid);
  if (i >= p.batch * p.regions * p.dim) { return; }
  let j = i % p.dim;
  let br = i / p.dim;
  let b = br / p.regions;
  var acc = 0.0;
  for (var q = 0u; q < p.queries; q++) {
    let wr = word_row(b, q);
    acc += work[at_g() + br * p.queries + q] * f32(words[wr * p.dim + j]) / (work[at_wnorm() + wr] + EPS);
  }
  let n = work[br];
  let radial = select(0.0, f32(regions[i]) * work[at_s() + br] / n, n > 0.0);
  grad[i] = T((acc - radial) / (n + EPS));
}

@compute @workgroup_size(64)
fn bw_words(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = bw_index(wid, nwg, lid);
  if (i >= words_batches() * p.queries * p.dim) { return; }
  let j = i % p.dim;
  let wr = i / p.dim;
  let q = wr % p.queries;
  // Shared words (stride 0) collect from every image; otherwise only from their own.
  let b0 = select(wr / p.queries, 0u, p.words_stride == 0u);
  let b1 = select(b0 + 1u, p.batch, p.words_stride == 0u);
  var acc = 0.0;
  var t = 0.0;
  for (var b = b0; b < b1; b++) {
    for (var r = 0u; r < p.regions; r++) {
      let br = b * p.regions + r;
      let g = work[at_g() + br * p.queries + q];
      acc += g * f32(regions[br * p.dim + j]) / (work[br] + EPS);
      t += g * work[at_cos() + br * p.queries + q];
    }
  }
  let n = work[at_wnorm() + wr];
  let radial = select(0.0, f32(words[i]) * t / n, n > 0.0);
  grad[i] = T((acc - radial) / (n + EPS));
}

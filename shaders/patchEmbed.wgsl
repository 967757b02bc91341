// ViT patch embedding: pixels [B, C, H, W] → tokens [B, 1 + gh·gw, D].
//   token 0        = class[d] + pos[0, d]
//   token 1 + t    = sum_k patch_t[k] · weight[d, k] + pos[1 + t, d]       (k = (c, ky, kx), K = C·p·p)
// i.e. a bias-free conv with kernel = stride = p, done as a matmul [B·tokens, K] × [K, D] whose left
// side is read straight from the image (no im2col buffer). Register blocking: each invocation
// computes TM token rows × 4 channels (a vec4), so a step of k costs TM + 4 loads for 4·TM FMAs.
// Class-token rows and rows past the end run the same loop on patch 0's pixels and discard the
// sum, which keeps the inner loop branch-free.
alias T = f32;

struct Params {
  channels: u32,
  height: u32,
  width: u32,
  size: u32,        // p, the patch side
  grid_w: u32,      // W / p
  tokens: u32,      // 1 + (H / p)(W / p)
  dim: u32,         // D
  rows: u32,        // B · tokens
  col_blocks: u32,  // ceil(D / 4)
}

override WG: u32 = 64u;
// Rows per invocation. A const, not an override: it sizes function-scope arrays.
const TM = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pixels: array<T>;
@group(0) @binding(2) var<storage, read> weight: array<T>;       // [D, C, p, p]
@group(0) @binding(3) var<storage, read> class_emb: array<T>;    // [D]
@group(0) @binding(4) var<storage, read> position: array<T>;     // [tokens, D]
@group(0) @binding(5) var<storage, read_write> out: array<T>;    // [B, tokens, D]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  let row0 = (i / p.col_blocks) * TM;
  if (row0 >= p.rows) { return; }
  let d0 = (i % p.col_blocks) * 4u;
  let k_len = p.channels * p.size * p.size;
  let plane = p.height * p.width;

  // Start of each row's patch in `pixels`.
  var base: array<u32, TM>;
  for (var r = 0u; r < TM; r++) {
    let row = min(row0 + r, p.rows - 1u);
    let t = row % p.tokens;
    let cell = max(t, 1u) - 1u;
    base[r] = (row / p.tokens) * p.channels * plane + (cell / p.grid_w) * p.size * p.width + (cell % p.grid_w) * p.size;
  }
  // Weight rows of the 4 channels (clamped past D; those results are not written).
  let w = vec4u(min(d0, p.dim - 1u), min(d0 + 1u, p.dim - 1u), min(d0 + 2u, p.dim - 1u), min(d0 + 3u, p.dim - 1u)) * k_len;

  var acc: array<vec4f, TM>;
  var k = 0u;
  for (var c = 0u; c < p.channels; c++) {
    for (var ky = 0u; ky < p.size; ky++) {
      let offset = c * plane + ky * p.width;
      for (var kx = 0u; kx < p.size; kx++) {
        let wv = vec4f(f32(weight[w.x + k]), f32(weight[w.y + k]), f32(weight[w.z + k]), f32(weight[w.w + k]));
        for (var r = 0u; r < TM; r++) {
          acc[r] += f32(pixels[base[r] + offset + kx]) * wv;
        }
        k++;
      }
    }
  }

  for (var r = 0u; r < TM; r++) {
    let row = row0 + r;
    if (row >= p.rows) { break; }
    let t = row % p.tokens;
    for (var j = 0u; j < 4u; j++) {
      let d = d0 + j;
      if (d >= p.dim) { break; }
      let v = select(acc[r][j], f32(class_emb[d]), t == 0u);
      out[row * p.dim + d] = T(v + f32(position[t * p.dim + d]));
    }
  }
}

// ---- Backward (patchEmbedBackward): from dy [B, tokens, D] ----
//   d pixels[b, c, y, x]      = sum_d dy[b, 1 + t(y, x), d] · weight[d, c, y % p, x % p]
//   d weight[d, c, ky, kx]    = sum_b sum_t dy[b, 1 + t, d] · pixels[b, c, py·p + ky, px·p + kx]
//   d position[t, d]          = sum_b dy[b, t, d];   d class[d] = d position[0, d]
// One invocation per output element, each a plain dot product in a fixed order (deterministic; no
// two invocations write one element). Bindings: 1 pixels, 2 weight, 3 dy, 4 the output being
// computed, 5 d class (written by d_position only).
@group(0) @binding(3) var<storage, read> dy: array<T>;
@group(0) @binding(4) var<storage, read_write> grad: array<T>;
@group(0) @binding(5) var<storage, read_write> grad_class: array<T>;

fn index(wid: vec3u, nwg: vec3u, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * WG + lid; }

// p.rows here is B (the batch).
@compute @workgroup_size(WG)
fn d_pixels(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.rows * p.channels * p.height * p.width) { return; }
  let x = i % p.width;
  let y = (i / p.width) % p.height;
  let c = (i / (p.width * p.height)) % p.channels;
  let b = i / (p.width * p.height * p.channels);
  let t = 1u + (y / p.size) * p.grid_w + x / p.size;
  let k = (c * p.size + y % p.size) * p.size + x % p.size;
  let kk = p.channels * p.size * p.size;
  let base = (b * p.tokens + t) * p.dim;
  var s = 0.0;
  for (var d = 0u; d < p.dim; d++) { s += f32(dy[base + d]) * f32(weight[d * kk + k]); }
  grad[i] = T(s);
}

@compute @workgroup_size(WG)
fn d_weight(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  let kk = p.channels * p.size * p.size;
  if (i >= p.dim * kk) { return; }
  let d = i / kk;
  let kx = i % p.size;
  let ky = (i / p.size) % p.size;
  let c = (i / (p.size * p.size)) % p.channels;
  let patches = p.tokens - 1u;
  var s = 0.0;
  for (var b = 0u; b < p.rows; b++) {
    let image = (b * p.channels + c) * p.height;
    for (var t = 0u; t < patches; t++) {
      let y = (t / p.grid_w) * p.size + ky;
      let x = (t % p.grid_w) * p.size + kx;
      s += f32(dy[(b * p.tokens + 1u + t) * p.dim + d]) * f32(pixels[(image + y) * p.width + x]);
    }
  }
  grad[i] = T(s);
}

@compute @workgroup_size(WG)
fn d_position(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.tokens * p.dim) { return; }
  var s = 0.0;
  for (var b = 0u; b < p.rows; b++) { s += f32(dy[b * p.tokens * p.dim + i]); }
  grad[i] = T(s);
  if (i < p.dim) { grad_class[i] = T(s); }
}

// Blocked forms when p % 4 == 0 (ViT patches), register-blocked like the forward: 4 neighbouring
// kernel columns kx are consecutive in both the weight and a patch row of pixels.
// d_pixels4: TM patch rows (b, patch) × 4 columns k per invocation: a vec4 of weights and TM dy
// values give 4·TM FMAs. d_weight4: 4 channels d × 4 columns: a vec4 of dy and 4 pixels give 16.
// Rows and channels past the end repeat the last one and are not stored.
@compute @workgroup_size(WG)
fn d_pixels4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  let kk = p.channels * p.size * p.size;
  let patches = p.tokens - 1u;
  let rows = p.rows * patches;
  let row0 = (i / (kk / 4u)) * TM;
  if (row0 >= rows) { return; }
  let k = 4u * (i % (kk / 4u));
  var dy_row: array<u32, TM>;
  for (var r = 0u; r < TM; r++) {
    let row = min(row0 + r, rows - 1u);
    dy_row[r] = ((row / patches) * p.tokens + 1u + row % patches) * p.dim;
  }
  var acc: array<vec4f, TM>;
  for (var d = 0u; d < p.dim; d++) {
    let w = d * kk + k;
    let wv = vec4f(f32(weight[w]), f32(weight[w + 1u]), f32(weight[w + 2u]), f32(weight[w + 3u]));
    for (var r = 0u; r < TM; r++) { acc[r] += f32(dy[dy_row[r] + d]) * wv; }
  }
  let kx = k % p.size;
  let ky = (k / p.size) % p.size;
  let c = k / (p.size * p.size);
  for (var r = 0u; r < min(TM, rows - row0); r++) {
    let row = row0 + r;
    let b = row / patches;
    let t = row % patches;
    let at = ((b * p.channels + c) * p.height + (t / p.grid_w) * p.size + ky) * p.width + (t % p.grid_w) * p.size + kx;
    for (var e = 0u; e < 4u; e++) { grad[at + e] = T(acc[r][e]); }
  }
}

@compute @workgroup_size(WG)
fn d_weight4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  let kk = p.channels * p.size * p.size;
  let groups = (p.dim + 3u) / 4u;
  if (i >= groups * (kk / 4u)) { return; }
  let k = 4u * (i % (kk / 4u));   // (c, ky, kx) of the first of 4 columns
  let d0 = 4u * (i / (kk / 4u));
  let kx = k % p.size;
  let ky = (k / p.size) % p.size;
  let c = k / (p.size * p.size);
  let dl = min(vec4u(d0) + vec4u(0u, 1u, 2u, 3u), vec4u(p.dim - 1u));
  let patches = p.tokens - 1u;
  var acc: array<vec4f, 4>;
  for (var b = 0u; b < p.rows; b++) {
    let image = (b * p.channels + c) * p.height;
    for (var t = 0u; t < patches; t++) {
      let at = (image + (t / p.grid_w) * p.size + ky) * p.width + (t % p.grid_w) * p.size + kx;
      let px = vec4f(f32(pixels[at]), f32(pixels[at + 1u]), f32(pixels[at + 2u]), f32(pixels[at + 3u]));
      let row = (b * p.tokens + 1u + t) * p.dim;
      let g = vec4f(f32(dy[row + dl.x]), f32(dy[row + dl.y]), f32(dy[row + dl.z]), f32(dy[row + dl.w]));
      for (var j = 0u; j < 4u; j++) { acc[j] += g[j] * px; }
    }
  }
  for (var j = 0u; j < min(4u, p.dim - d0); j++) {
    for (var e = 0u; e < 4u; e++) { grad[(d0 + j) * kk + k + e] = T(acc[j][e]); }
  }
}

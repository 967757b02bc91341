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

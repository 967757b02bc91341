// Fused attention backward, flash-attention style: for out = softmax(q·kᵀ·scale + mask)·v per
// (batch, head) and the upstream gradient dout, with P = softmax(...) and D_i = dout_i · out_i:
//   dS_ij = P_ij (dout_i · v_j − D_i),  dq_i = scale Σ_j dS_ij k_j,
//   dk_j = scale Σ_i dS_ij q_i,         dv_j = Σ_i P_ij dout_i.
// P is never stored: it is recomputed from each query row's log-sum-exp. Two entry points, one
// invocation per row, WG rows of one (batch, head) per workgroup, no workgroup memory (every
// invocation of a workgroup reads the same other-side rows, which stay in cache):
//   dq_pass   per query i: a first sweep over the keys gives its log-sum-exp (online max and sum),
//             a second accumulates dq_i; (lse_i, D_i) go to `stats`.
//   dkv_pass  per key j: one sweep over the queries, P_ij recomputed from stats, accumulates dk_j, dv_j.
// q, k, v (and their gradients) are rows of `rowStride` elements, head h at columns off + h·Dh
// ([B, L, H·Dh] each, or one packed [B, L, 3·H·Dh] tensor); out and dout are [B, L, H·Dh].
// Logits are log2-scaled (q·k · scale · log2 e) so exp2 is the exponential. Masked logits: causal
// (key j > query i) or an additive f32 tensor [L, L] (maskStride 0) or [B, L, L]; a row whose
// logits are all -inf has P = 0 and gets zero gradients.
alias T = f32;

struct Params {
  L: u32,           // tokens
  heads: u32,
  blocks: u32,      // ceil(L / WG)
  total: u32,       // workgroups with work: blocks · B · heads
  rowStride: u32,   // elements between consecutive tokens of q, k, v and of their gradients
  qOff: u32,        // first column of q, k, v within a row
  kOff: u32,
  vOff: u32,
  scale: f32,       // softmax scale · log2(e)
  mask: u32,        // 0 none, 1 causal, 2 additive tensor
  maskStride: u32,  // elements between the mask's batches (0: one [L, L] mask for every batch)
  gradScale: f32,   // softmax scale
}

override DH: u32 = 64u;             // head dim, at most 4 · MAXV
override WG: u32 = 16u;             // rows per workgroup
override DV: u32 = (DH + 3u) / 4u;  // vec4 chunks per head row

const MAXV = 32u;
const LOWEST = -3.4028234663852886e38;  // below every finite logit: marks masked pairs
const LOG2E = 1.4426950408889634;

@group(0) @binding(0) var<uniform> p: Params;
// q, k, v, out and dout elements: vec4<T> when DH % 4 == 0 (one load per chunk), else T
// (attentionBackward.ts swaps this line). The loaders below type-check with either, for T f32 and
// f16 (vec4<T>(x) of a T or a vec4<T>, then f32: vec4f(x) of an f16 scalar is no valid conversion).
alias QKV = vec4<T>;
@group(0) @binding(1) var<storage, read> q: array<QKV>;
@group(0) @binding(2) var<storage, read> k: array<QKV>;
@group(0) @binding(3) var<storage, read> v: array<QKV>;
@group(0) @binding(4) var<storage, read> o: array<QKV>;
@group(0) @binding(5) var<storage, read> dout: array<QKV>;
@group(0) @binding(6) var<storage, read> mask: array<f32>;  // q again without a mask tensor

// Chunk c (elements 4c..4c+3, zeros past DH) of a head row starting at element `base`; the
// branches fold away for a given DH.
override VEC: bool = DH % 4u == 0u;  // must agree with the QKV alias
fn chunkQ(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(vec4<T>(q[base / 4u + c])); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = f32(vec4<T>(q[base + 4u * c + t]).x); } }
  return r;
}
fn chunkK(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(vec4<T>(k[base / 4u + c])); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = f32(vec4<T>(k[base + 4u * c + t]).x); } }
  return r;
}
fn chunkV(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(vec4<T>(v[base / 4u + c])); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = f32(vec4<T>(v[base + 4u * c + t]).x); } }
  return r;
}
fn chunkO(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(vec4<T>(o[base / 4u + c])); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = f32(vec4<T>(o[base + 4u * c + t]).x); } }
  return r;
}
fn chunkDO(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(vec4<T>(dout[base / 4u + c])); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = f32(vec4<T>(dout[base + 4u * c + t]).x); } }
  return r;
}

// A workgroup's rows: block `blk` of WG rows of head h of batch b.
struct Block { blk: u32, b: u32, h: u32 }

fn block(wid: vec3u, nwg: vec3u) -> Block {
  let flat = wid.y * nwg.x + wid.x;
  let bh = flat / p.blocks;
  return Block(flat % p.blocks, bh / p.heads, bh % p.heads);
}

// First element of token t's head row in q, k, v (at column offset `off`) or their gradients.
fn inBase(t: u32, off: u32, bl: Block) -> u32 { return (bl.b * p.L + t) * p.rowStride + off + bl.h * DH; }
// ... in out and dout.
fn outBase(t: u32, bl: Block) -> u32 { return ((bl.b * p.L + t) * p.heads + bl.h) * DH; }
fn statsIndex(t: u32, bl: Block) -> u32 { return (bl.b * p.heads + bl.h) * p.L + t; }

// Log2-scaled logit of query i for key j from the log2-scaled dot product s: LOWEST when masked
// (causal), -inf when the mask tensor says so.
fn logit(s: f32, i: u32, j: u32, bl: Block) -> f32 {
  var r = s;
  if (p.mask == 2u) { r += mask[bl.b * p.maskStride + i * p.L + j] * LOG2E; }
  return select(r, LOWEST, p.mask == 1u && j > i);
}

// P from a log2-scaled logit and the row's log2 log-sum-exp; 0 for masked pairs and empty rows.
fn prob(s: f32, lse: f32) -> f32 {
  return select(exp2(s - lse), 0.0, s <= LOWEST || lse <= LOWEST);
}

// ---- dq_pass ----
@group(0) @binding(7) var<storage, read_write> dq: array<T>;
@group(0) @binding(8) var<storage, read_write> stats: array<vec2f>;  // (log2 lse, D) per query

@compute @workgroup_size(WG)
fn dq_pass(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_index) lid: u32) {
  if (wid.y * nwg.x + wid.x >= p.total) { return; }
  let bl = block(wid, nwg);
  let i = bl.blk * WG + lid;
  let ii = min(i, p.L - 1u);  // rows past L compute row L-1 again and store nothing
  // Causal: no query of this block looks past its last row.
  let kEnd = select(p.L, min(p.L, (bl.blk + 1u) * WG), p.mask == 1u);
  var qv: array<vec4f, MAXV>;
  var dov: array<vec4f, MAXV>;
  var acc: array<vec4f, MAXV>;
  var dd = vec4f(0.0);
  for (var c = 0u; c < DV; c++) {
    qv[c] = chunkQ(inBase(ii, p.qOff, bl), c) * p.scale;
    dov[c] = chunkDO(outBase(ii, bl), c);
    dd += dov[c] * chunkO(outBase(ii, bl), c);
    acc[c] = vec4f(0.0);
  }
  let D = dot(dd, vec4f(1.0));
  var m = LOWEST;
  var l = 0.0;
  for (var j = 0u; j < kEnd; j++) {
    var d = vec4f(0.0);
    for (var c = 0u; c < DV; c++) { d += qv[c] * chunkK(inBase(j, p.kOff, bl), c); }
    let s = logit(dot(d, vec4f(1.0)), ii, j, bl);
    if (s > m) { l = l * exp2(m - s) + 1.0; m = s; } else if (s > LOWEST) { l += exp2(s - m); }
  }
  let lse = select(m + log2(l), LOWEST, m <= LOWEST);
  var kr: array<vec4f, MAXV>;  // key j's row, loaded once per key
  for (var j = 0u; j < kEnd; j++) {
    var d = vec4f(0.0);
    var dp = vec4f(0.0);
    for (var c = 0u; c < DV; c++) {
      kr[c] = chunkK(inBase(j, p.kOff, bl), c);
      d += qv[c] * kr[c];
      dp += dov[c] * chunkV(inBase(j, p.vOff, bl), c);
    }
    let ds = prob(logit(dot(d, vec4f(1.0)), ii, j, bl), lse) * (dot(dp, vec4f(1.0)) - D);
    for (var c = 0u; c < DV; c++) { acc[c] += ds * kr[c]; }
  }
  if (i >= p.L) { return; }
  let base = inBase(i, p.qOff, bl);
  for (var c = 0u; c < DV; c++) {
    let r = acc[c] * p.gradScale;
    for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { dq[base + 4u * c + t] = T(r[t]); } }
  }
  stats[statsIndex(i, bl)] = vec2f(lse, D);
}

// ---- dkv_pass ----
@group(0) @binding(7) var<storage, read_write> dk: array<T>;
@group(0) @binding(8) var<storage, read_write> dv: array<T>;   // dk's buffer is used when PACKED
@group(0) @binding(9) var<storage, read> rstats: array<vec2f>;

override PACKED: bool = false;  // dq, dk, dv share one packed tensor: dk and dv both go to `dk`

@compute @workgroup_size(WG)
fn dkv_pass(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  if (wid.y * nwg.x + wid.x >= p.total) { return; }
  let bl = block(wid, nwg);
  let j = bl.blk * WG + lid;
  let jj = min(j, p.L - 1u);
  // Causal: queries before the block's first key see none of its keys.
  let iStart = select(0u, bl.blk * WG, p.mask == 1u);
  var kv: array<vec4f, MAXV>;
  var vv: array<vec4f, MAXV>;
  var dka: array<vec4f, MAXV>;
  var dva: array<vec4f, MAXV>;
  for (var c = 0u; c < DV; c++) {
    kv[c] = chunkK(inBase(jj, p.kOff, bl), c);
    vv[c] = chunkV(inBase(jj, p.vOff, bl), c);
    dka[c] = vec4f(0.0);
    dva[c] = vec4f(0.0);
  }
  var qr: array<vec4f, MAXV>;  // query i's q and dout rows, loaded once per query
  var dr: array<vec4f, MAXV>;
  for (var i = iStart; i < p.L; i++) {
    var d = vec4f(0.0);
    var dp = vec4f(0.0);
    for (var c = 0u; c < DV; c++) {
      qr[c] = chunkQ(inBase(i, p.qOff, bl), c);
      dr[c] = chunkDO(outBase(i, bl), c);
      d += qr[c] * kv[c];
      dp += dr[c] * vv[c];
    }
    let st = rstats[statsIndex(i, bl)];
    let pr = prob(logit(dot(d, vec4f(1.0)) * p.scale, i, jj, bl), st.x);
    let ds = pr * (dot(dp, vec4f(1.0)) - st.y);
    for (var c = 0u; c < DV; c++) {
      dva[c] += pr * dr[c];
      dka[c] += ds * qr[c];
    }
  }
  if (j >= p.L) { return; }
  let kb = inBase(j, p.kOff, bl);
  let vb = inBase(j, p.vOff, bl);
  for (var c = 0u; c < DV; c++) {
    let rk = dka[c] * p.gradScale;
    let rv = dva[c];
    for (var t = 0u; t < 4u; t++) {
      if (4u * c + t < DH) {
        dk[kb + 4u * c + t] = T(rk[t]);
        if (PACKED) { dk[vb + 4u * c + t] = T(rv[t]); } else { dv[vb + 4u * c + t] = T(rv[t]); }
      }
    }
  }
}

// Fused attention backward, flash-attention style: for out = softmax(q·kᵀ·scale + mask)·v per
// (batch, head) and the upstream gradient dout, with P = softmax(...) and D_i = dout_i · out_i:
//   dS_ij = P_ij (dout_i · v_j − D_i),  dq_i = scale Σ_j dS_ij k_j,
//   dk_j = scale Σ_i dS_ij q_i,         dv_j = Σ_i P_ij dout_i.
// P is never stored: it is recomputed from each query row's log-sum-exp. Two passes, one
// invocation per row, WG rows of one (batch, head) per workgroup, no atomics:
//   dq pass   per query i: a first sweep over the keys gives its log-sum-exp (online max and sum),
//             a second accumulates dq_i; (lse_i, D_i) go to `stats`.
//   dkv pass  per key j: one sweep over the queries, P_ij recomputed from stats, accumulates dk_j, dv_j.
// Two variants of each pass:
//  - `rows` (dq_rows, dkv_rows): head rows in function-local arrays indexed by loop counters;
//    every invocation loads the other side's rows itself (any adapter);
//  - `subgroup` (after the marker at the end; CPU adapters such as lavapipe): as the forward's
//    subgroup variant, a row lives in named struct members (registers, not per-lane memory) and
//    8 lanes each load a part of the other side's rows and hand the parts round by shuffles.
// q, k, v (and their gradients) are rows of `rowStride` elements, head h at columns off + h·Dh
// ([B, L, H·Dh] each, or one packed [B, L, 3·H·Dh] tensor); out and dout are [B, L, H·Dh].
// Logits are log2-scaled (q·k · scale · log2 e) so exp2 is the exponential. Masked logits: causal
// (key j > query i) or an additive f32 tensor [L, L] (maskStride 0) or [B, L, L]; a row whose
// logits are all -inf has P = 0 and gets zero gradients.
// Outputs: `grad` is dq in the dq pass and dk in the dkv pass; dv goes to `dv`, or to `grad` when
// PACKED (dq, dk, dv in one tensor).
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

// A workgroup's rows: block `blk` of WG rows of head h of batch b (uniform across the workgroup,
// so are the loop bounds drawn from it, which the subgroup variant's shuffles need).
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

@group(0) @binding(7) var<storage, read_write> grad: array<T>;
@group(0) @binding(8) var<storage, read_write> dv: array<T>;
@group(0) @binding(9) var<storage, read_write> stats: array<vec2f>;  // (log2 lse, D) per query: dq pass
@group(0) @binding(9) var<storage, read> rstats: array<vec2f>;       // ... read by the dkv pass

override PACKED: bool = false;

// ---- rows variant ----

@compute @workgroup_size(WG)
fn dq_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
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
    for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { grad[base + 4u * c + t] = T(r[t]); } }
  }
  stats[statsIndex(i, bl)] = vec2f(lse, D);
}

@compute @workgroup_size(WG)
fn dkv_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
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
        grad[kb + 4u * c + t] = T(rk[t]);
        if (PACKED) { grad[vb + 4u * c + t] = T(rv[t]); } else { dv[vb + 4u * c + t] = T(rv[t]); }
      }
    }
  }
}

// ---- subgroup variant: compiled with `enable subgroups;` and shaders/subgroupRows.wgsl prepended ----
// This invocation's rows (q, dout and the dq accumulator in the dq pass; k, v and their
// accumulators in the dkv pass) are Rows, in registers: as arrays indexed by a loop counter (the
// rows variant) lavapipe keeps them in per-lane memory, ~150× slower than the forward. Groups
// past G are never touched (G is an override: the `G > n` branches fold away). Each step loads
// only the other side's rows, a Lane's part per lane (lane t of the first 8 of a subgroup: chunk
// 8g + t; the others repeat lane t % 8). All invocations of a workgroup walk the same keys
// (queries), so every lane of a subgroup is active at each shuffle.

override G: u32 = (DV + 7u) / 8u;  // chunk groups of 8 vec4s per head row, 1..4

// Group, Row and groupDot: shaders/subgroupRows.wgsl, prepended.
// One lane's chunks of a head row, one per group.
struct Lane { g0: vec4f, g1: vec4f, g2: vec4f, g3: vec4f }

const SRC_Q = 0u;
const SRC_K = 1u;
const SRC_V = 2u;
const SRC_DO = 3u;

// Chunk c of a head row of q, k, v or dout (`src`, a constant at every call); zeros past DV.
fn load(src: u32, base: u32, c: u32) -> vec4f {
  if (c >= DV) { return vec4f(0.0); }
  switch src {
    case SRC_Q: { return chunkQ(base, c); }
    case SRC_K: { return chunkK(base, c); }
    case SRC_V: { return chunkV(base, c); }
    default: { return chunkDO(base, c); }
  }
}

fn groupLoad(src: u32, base: u32, g: u32) -> Group {
  let c = 8u * g;
  return Group(load(src, base, c), load(src, base, c + 1u), load(src, base, c + 2u), load(src, base, c + 3u),
               load(src, base, c + 4u), load(src, base, c + 5u), load(src, base, c + 6u), load(src, base, c + 7u));
}

fn rowLoad(src: u32, base: u32) -> Row {
  var r: Row;
  r.g0 = groupLoad(src, base, 0u);
  if (G > 1u) { r.g1 = groupLoad(src, base, 1u); }
  if (G > 2u) { r.g2 = groupLoad(src, base, 2u); }
  if (G > 3u) { r.g3 = groupLoad(src, base, 3u); }
  return r;
}

// This lane's part of a head row (lanes 8 apart in the subgroup load the same chunks).
fn laneLoad(src: u32, base: u32, sgid: u32) -> Lane {
  let lane = sgid % 8u;
  var x: Lane;
  x.g0 = load(src, base, sgid);
  if (G > 1u) { x.g1 = load(src, base, 8u + lane); }
  if (G > 2u) { x.g2 = load(src, base, 16u + lane); }
  if (G > 3u) { x.g3 = load(src, base, 24u + lane); }
  return x;
}

fn rowDot(a: Row, x: Lane) -> f32 {
  var d = groupDot(a.g0, x.g0);
  if (G > 1u) { d += groupDot(a.g1, x.g1); }
  if (G > 2u) { d += groupDot(a.g2, x.g2); }
  if (G > 3u) { d += groupDot(a.g3, x.g3); }
  return dot(d, vec4f(1.0));
}

// a + w · (the group the first 8 lanes hold in x).
fn groupAxpy(a: Group, w: f32, x: vec4f) -> Group {
  return Group(a.c0 + w * subgroupShuffle(x, 0u), a.c1 + w * subgroupShuffle(x, 1u),
               a.c2 + w * subgroupShuffle(x, 2u), a.c3 + w * subgroupShuffle(x, 3u),
               a.c4 + w * subgroupShuffle(x, 4u), a.c5 + w * subgroupShuffle(x, 5u),
               a.c6 + w * subgroupShuffle(x, 6u), a.c7 + w * subgroupShuffle(x, 7u));
}

fn rowAxpy(a: Row, w: f32, x: Lane) -> Row {
  var r: Row;
  r.g0 = groupAxpy(a.g0, w, x.g0);
  if (G > 1u) { r.g1 = groupAxpy(a.g1, w, x.g1); }
  if (G > 2u) { r.g2 = groupAxpy(a.g2, w, x.g2); }
  if (G > 3u) { r.g3 = groupAxpy(a.g3, w, x.g3); }
  return r;
}

// Chunk c of a gradient row (elements below DH) times s, to `grad` (dst 0) or `dv` (dst 1).
fn put(dst: u32, base: u32, c: u32, r: vec4f, s: f32) {
  for (var t = 0u; t < 4u; t++) {
    if (4u * c + t < DH) {
      if (dst == 0u) { grad[base + 4u * c + t] = T(r[t] * s); } else { dv[base + 4u * c + t] = T(r[t] * s); }
    }
  }
}

fn groupStore(dst: u32, base: u32, g: u32, a: Group, s: f32) {
  let c = 8u * g;
  put(dst, base, c, a.c0, s);
  put(dst, base, c + 1u, a.c1, s);
  put(dst, base, c + 2u, a.c2, s);
  put(dst, base, c + 3u, a.c3, s);
  put(dst, base, c + 4u, a.c4, s);
  put(dst, base, c + 5u, a.c5, s);
  put(dst, base, c + 6u, a.c6, s);
  put(dst, base, c + 7u, a.c7, s);
}

fn rowStore(dst: u32, base: u32, a: Row, s: f32) {
  groupStore(dst, base, 0u, a.g0, s);
  if (G > 1u) { groupStore(dst, base, 1u, a.g1, s); }
  if (G > 2u) { groupStore(dst, base, 2u, a.g2, s); }
  if (G > 3u) { groupStore(dst, base, 3u, a.g3, s); }
}

@compute @workgroup_size(WG)
fn dq_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {
  if (wid.y * nwg.x + wid.x >= p.total) { return; }
  let bl = block(wid, nwg);
  // Causal: no query of this block looks past its last row.
  let kEnd = select(p.L, min(p.L, (bl.blk + 1u) * WG), p.mask == 1u);
  let i = bl.blk * WG + lid;
  let ii = min(i, p.L - 1u);  // rows past L compute row L-1 again and store nothing
  let qr = rowLoad(SRC_Q, inBase(ii, p.qOff, bl));
  let ob = outBase(ii, bl);
  let dr = rowLoad(SRC_DO, ob);
  var dd = vec4f(0.0);
  for (var c = 0u; c < DV; c++) { dd += chunkDO(ob, c) * chunkO(ob, c); }
  let D = dot(dd, vec4f(1.0));
  var m = LOWEST;
  var l = 0.0;
  for (var j = 0u; j < kEnd; j++) {
    let s = logit(rowDot(qr, laneLoad(SRC_K, inBase(j, p.kOff, bl), sgid)) * p.scale, ii, j, bl);
    let mt = max(m, s);
    l = l * exp2(m - mt) + select(exp2(s - mt), 0.0, s <= LOWEST);
    m = mt;
  }
  let lse = select(m + log2(l), LOWEST, m <= LOWEST);
  var acc: Row;
  for (var j = 0u; j < kEnd; j++) {
    let xk = laneLoad(SRC_K, inBase(j, p.kOff, bl), sgid);
    let xv = laneLoad(SRC_V, inBase(j, p.vOff, bl), sgid);
    let pr = prob(logit(rowDot(qr, xk) * p.scale, ii, j, bl), lse);
    acc = rowAxpy(acc, pr * (rowDot(dr, xv) - D), xk);
  }
  if (i >= p.L) { return; }
  rowStore(0u, inBase(i, p.qOff, bl), acc, p.gradScale);
  stats[statsIndex(i, bl)] = vec2f(lse, D);
}

@compute @workgroup_size(WG)
fn dkv_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {
  if (wid.y * nwg.x + wid.x >= p.total) { return; }
  let bl = block(wid, nwg);
  // Causal: queries before the block's first key see none of its keys.
  let iStart = select(0u, bl.blk * WG, p.mask == 1u);
  let j = bl.blk * WG + lid;
  let jj = min(j, p.L - 1u);
  let kr = rowLoad(SRC_K, inBase(jj, p.kOff, bl));
  let vr = rowLoad(SRC_V, inBase(jj, p.vOff, bl));
  var dka: Row;
  var dva: Row;
  for (var i = iStart; i < p.L; i++) {
    let xq = laneLoad(SRC_Q, inBase(i, p.qOff, bl), sgid);
    let xd = laneLoad(SRC_DO, outBase(i, bl), sgid);
    let st = rstats[statsIndex(i, bl)];
    let pr = prob(logit(rowDot(kr, xq) * p.scale, i, jj, bl), st.x);
    dva = rowAxpy(dva, pr, xd);
    dka = rowAxpy(dka, pr * (rowDot(vr, xd) - st.y), xq);
  }
  if (j >= p.L) { return; }
  rowStore(0u, inBase(j, p.kOff, bl), dka, p.gradScale);
  rowStore(select(1u, 0u, PACKED), inBase(j, p.vOff, bl), dva, 1.0);
}

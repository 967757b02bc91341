// Fused attention: out = softmax(q·kᵀ·scale + mask)·v per (batch, head), in one pass over the keys
// with an online softmax (running max and sum in f32), flash-attention style. q is pre-multiplied
// by scale·log2 e, so exp2 is the exponential. A workgroup holds consecutive queries of one
// (batch, head), so all its invocations need the same K and V rows:
//  - `tiled` (real GPUs) splits each query row over several invocations and stages TK keys of K
//    and V in workgroup memory per step;
//  - `subgroup` (after the marker at the end; CPU adapters such as lavapipe, where every storage
//    or workgroup load is a per-lane gather and barriers are expensive) gives each invocation a
//    whole query row, lets each of 8 lanes load a different part of two K and V rows and hands
//    the parts round with subgroupShuffle.
// q, k and v are rows of `rowStride` elements ([B, L, H·Dh], or one packed [B, L, 3·H·Dh] tensor
// bound three times), head h at columns off + h·Dh. Output [B, L, H·Dh].
// Masked logits: causal (key j > query i) or an additive f32 tensor, [L, L] for every batch
// (maskStride 0) or [B, L, L]. A row whose logits are all -inf has no softmax; it gives 0 (PyTorch
// gives NaN there).
alias T = f32;

struct Params {
  L: u32,           // tokens
  heads: u32,
  qBlocks: u32,     // ceil(L / WG)
  total: u32,       // workgroups with work: qBlocks · B · heads
  rowStride: u32,   // elements between consecutive tokens of q, k, v
  qOff: u32,        // first column of q, k, v within a row
  kOff: u32,
  vOff: u32,
  scale: f32,       // softmax scale · log2(e)
  mask: u32,        // 0 none, 1 causal, 2 additive tensor
  maskStride: u32,  // elements between the mask's batches (0: one [L, L] mask for every batch)
}

override DH: u32 = 64u;             // head dim, at most 4 · MAXV
override WG: u32 = 32u;             // invocations per workgroup
override TK: u32 = 16u;             // keys per workgroup-memory tile (`tiled`)
override DV: u32 = (DH + 3u) / 4u;  // vec4s per head row

const MAXV = 32u;
const LOWEST = -3.4028234663852886e38;  // below every finite logit: marks masked keys
const LOG2E = 1.4426950408889634;

@group(0) @binding(0) var<uniform> p: Params;
// q, k, v elements: vec4<T> when DH % 4 == 0 (one load per 4 values), else T (attention.ts swaps
// this line). The loaders below type-check with either.
alias QKV = vec4<T>;
@group(0) @binding(1) var<storage, read> q: array<QKV>;
@group(0) @binding(2) var<storage, read> k: array<QKV>;
@group(0) @binding(3) var<storage, read> v: array<QKV>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;

// Chunk c (elements 4c..4c+3) of the head row starting at element `base`. Without vec4 elements,
// elements past DH read as 0; the branches fold away for a given DH.
override VEC: bool = DH % 4u == 0u;  // must agree with the QKV alias
fn loadQ(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(q[base / 4u + c]); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = vec4f(q[base + 4u * c + t]).x; } }
  return r;
}
fn loadK(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(k[base / 4u + c]); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = vec4f(k[base + 4u * c + t]).x; } }
  return r;
}
fn loadV(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(v[base / 4u + c]); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = vec4f(v[base + 4u * c + t]).x; } }
  return r;
}

// Where a query block's work is, decoded from the (possibly 2-D) workgroup id.
struct Block { qb: u32, row0: u32, col: u32, kEnd: u32, mask0: u32 }

fn block(flat: u32, queries: u32) -> Block {
  let qb = flat % p.qBlocks;
  let bh = flat / p.qBlocks;
  // Causal: no query of this block looks past its last row.
  let kEnd = select(p.L, min(p.L, (qb + 1u) * queries), p.mask == 1u);
  let b = bh / p.heads;
  return Block(qb, b * p.L, (bh % p.heads) * DH, kEnd, b * p.maskStride);
}

fn rowBase(row: u32, off: u32, bl: Block) -> u32 {
  return (bl.row0 + row) * p.rowStride + off + bl.col;
}

// Log2-scaled logit of query i for key j from the dot product d: LOWEST where masked out,
// -inf where the mask tensor says so.
fn logit(d: f32, i: u32, j: u32, bl: Block) -> f32 {
  var s = d;
  if (p.mask == 2u) { s += mask[bl.mask0 + min(i, p.L - 1u) * p.L + min(j, p.L - 1u)] * LOG2E; }
  return select(s, LOWEST, j >= bl.kEnd || (p.mask == 1u && j > i));
}

// Writes chunk c (elements 4c..4c+3, those below DH) of query i's output row.
fn storeChunk(i: u32, c: u32, r: vec4f, bl: Block) {
  let base = (bl.row0 + i) * p.heads * DH + bl.col;
  for (var t = 0u; t < 4u; t++) {
    if (4u * c + t < DH) { out[base + 4u * c + t] = T(r[t]); }
  }
}

// ---- tiled variant (GPUs) ----
// S = ceil(DV / CV) invocations share one query row, each owning CV vec4 chunks of its q and of
// its output accumulator in function-local arrays indexed only by constant-bound loops, so they
// stay in registers whatever the head dim (one invocation per row would need 2·DV vec4 registers,
// 64 at head dim 128). A workgroup holds QB = WG / S queries of one (batch, head) and walks the
// keys TK at a time, staged in workgroup memory with head rows padded to DP = S·CV chunks (zeros)
// so that no slice needs a bound check:
//   1. stage TK keys of K and V;                  2. partial dots of each slice with each key;
//   3. one lane per (query, key) sums S partials into the logit;
//   4. every lane rescales its accumulator by the tile's max and adds the weighted V rows.
// The key loops stay rolled: the code is the same size at every head dim (the previous variant,
// a whole query row per invocation, took 17 s / 79 s / 260 s to compile at head dim 32/64/128 on
// lavapipe).

const CV = 4u;                             // vec4 chunks of q and out per invocation
override S: u32 = (DV + CV - 1u) / CV;     // invocations per query row
override DP: u32 = S * CV;                 // chunks per staged key row (padded)
override QB: u32 = WG / S;                 // queries per workgroup (WG = QB · S)

var<workgroup> kTile: array<vec4f, TK * DP>;
var<workgroup> vTile: array<vec4f, TK * DP>;
var<workgroup> part: array<f32, WG * TK>;  // [lane][key] partial dots
var<workgroup> score: array<f32, QB * TK>; // [query][key] log2-scaled logits

@compute @workgroup_size(WG)
fn tiled(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let flat = wid.y * nwg.x + wid.x;
  if (flat >= p.total) { return; }
  let bl = block(flat, QB);
  let qi = lid / S;                 // query within the workgroup
  let c0 = (lid % S) * CV;          // first chunk of this lane's slice
  let i = bl.qb * QB + qi;
  var qs: array<vec4f, CV>;
  var acc: array<vec4f, CV>;
  let qBase = rowBase(min(i, p.L - 1u), p.qOff, bl);
  for (var c = 0u; c < CV; c++) {
    if (c0 + c < DV) { qs[c] = loadQ(qBase, c0 + c) * p.scale; }
    acc[c] = vec4f(0.0);
  }
  var m = LOWEST;  // running max of the logits
  var l = 0.0;     // running sum of exp2(logit - m)
  for (var t0 = 0u; t0 < bl.kEnd; t0 += TK) {
    for (var e = lid; e < TK * DP; e += WG) {
      let j = min(t0 + e / DP, p.L - 1u);
      let c = e % DP;
      var kx = vec4f(0.0);
      var vx = vec4f(0.0);
      if (c < DV) {
        kx = loadK(rowBase(j, p.kOff, bl), c);
        vx = loadV(rowBase(j, p.vOff, bl), c);
      }
      kTile[e] = kx;
      vTile[e] = vx;
    }
    workgroupBarrier();
    let n = min(TK, bl.kEnd - t0);
    for (var s = 0u; s < n; s++) {
      var d = vec4f(0.0);
      for (var c = 0u; c < CV; c++) { d += qs[c] * kTile[s * DP + c0 + c]; }
      part[lid * TK + s] = dot(d, vec4f(1.0));
    }
    workgroupBarrier();
    for (var e = lid; e < QB * TK; e += WG) {
      let q0 = e / TK;
      let s = e % TK;
      var d = 0.0;
      for (var u = 0u; u < S; u++) { d += part[(q0 * S + u) * TK + s]; }
      score[e] = logit(d, bl.qb * QB + q0, t0 + s, bl);
    }
    workgroupBarrier();
    var mt = m;
    for (var s = 0u; s < n; s++) { mt = max(mt, score[qi * TK + s]); }
    let corr = exp2(m - mt);
    m = mt;
    l *= corr;
    for (var c = 0u; c < CV; c++) { acc[c] *= corr; }
    for (var s = 0u; s < n; s++) {
      let x = score[qi * TK + s];
      let w = select(exp2(x - m), 0.0, x <= LOWEST);
      l += w;
      for (var c = 0u; c < CV; c++) { acc[c] += w * vTile[s * DP + c0 + c]; }
    }
    workgroupBarrier();
  }
  if (i >= p.L) { return; }
  // No finite logit (every key masked by -inf): 0 rather than 0/0.
  let inv = select(1.0 / l, 0.0, m <= LOWEST);
  for (var c = 0u; c < CV; c++) { storeChunk(i, c0 + c, acc[c] * inv, bl); }
}

// ---- subgroup variant: compiled with `enable subgroups;` prepended ----
// One invocation owns one query row: its q and its output accumulator live in private arrays
// indexed only by constants once the loops over G (at most 4) unroll. Keys go two at a time: two
// scores, one rescale of the accumulator, two updates (four per step unrolls into code that
// lavapipe takes ~50% longer to compile, for no speed).
// Lane t (of the first 8 of a subgroup) holds chunks c ≡ t (mod 8) of each of the two current K
// and V rows: kr[kk·G + g] = K[j0 + kk][chunk 8g + t]. Every other lane repeats lane t % 8.
// Shuffles with literal lane ids and loops of constant length keep everything in registers.

override G: u32 = (DV + 7u) / 8u;  // chunk groups of 8 vec4s per head row

var<private> kr: array<vec4f, 8>;
var<private> vr: array<vec4f, 8>;

var<private> qv: array<vec4f, MAXV>;
var<private> acc: array<vec4f, MAXV>;
var<private> mRun: f32;  // running max of the (log2-scaled) logits
var<private> lRun: f32;  // running sum of exp2(logit - mRun)

fn begin(i: u32, bl: Block) {
  let base = rowBase(min(i, p.L - 1u), p.qOff, bl);
  for (var c = 0u; c < DV; c++) {
    qv[c] = loadQ(base, c) * p.scale;
    acc[c] = vec4f(0.0);
  }
  mRun = LOWEST;
  lRun = 0.0;
}

// Online-softmax step over two logits: returns their weights and rescales the accumulator.
fn softmaxStep(s: vec2f) -> vec2f {
  let m = max(mRun, max(s.x, s.y));
  let corr = exp2(mRun - m);
  let w = select(exp2(s - m), vec2f(0.0), s <= vec2f(LOWEST));
  mRun = m;
  lRun = lRun * corr + w.x + w.y;
  for (var c = 0u; c < DV; c++) { acc[c] *= corr; }
  return w;
}

fn finish(i: u32, bl: Block) {
  if (i >= p.L) { return; }
  // No finite logit (every key masked by -inf): 0 rather than 0/0.
  let inv = select(1.0 / lRun, 0.0, mRun <= LOWEST);
  for (var c = 0u; c < DV; c++) { storeChunk(i, c, acc[c] * inv, bl); }
}

fn loadRows(j0: u32, lane: u32, bl: Block) {
  for (var kk = 0u; kk < 2u; kk++) {
    let base = min(j0 + kk, bl.kEnd - 1u);
    for (var g = 0u; g < G; g++) {
      let c = 8u * g + lane;
      var kx = vec4f(0.0);
      var vx = vec4f(0.0);
      if (c < DV) {
        kx = loadK(rowBase(base, p.kOff, bl), c);
        vx = loadV(rowBase(base, p.vOff, bl), c);
      }
      kr[kk * G + g] = kx;
      vr[kk * G + g] = vx;
    }
  }
}

fn rowDot(kk: u32) -> f32 {
  var d = vec4f(0.0);
  for (var g = 0u; g < G; g++) {
    let x = kr[kk * G + g];
    let c = 8u * g;
    d += qv[c] * subgroupShuffle(x, 0u) + qv[c + 1u] * subgroupShuffle(x, 1u)
       + qv[c + 2u] * subgroupShuffle(x, 2u) + qv[c + 3u] * subgroupShuffle(x, 3u)
       + qv[c + 4u] * subgroupShuffle(x, 4u) + qv[c + 5u] * subgroupShuffle(x, 5u)
       + qv[c + 6u] * subgroupShuffle(x, 6u) + qv[c + 7u] * subgroupShuffle(x, 7u);
  }
  return dot(d, vec4f(1.0));
}

fn addRow(kk: u32, w: f32) {
  for (var g = 0u; g < G; g++) {
    let x = vr[kk * G + g];
    let c = 8u * g;
    acc[c] += w * subgroupShuffle(x, 0u);
    acc[c + 1u] += w * subgroupShuffle(x, 1u);
    acc[c + 2u] += w * subgroupShuffle(x, 2u);
    acc[c + 3u] += w * subgroupShuffle(x, 3u);
    acc[c + 4u] += w * subgroupShuffle(x, 4u);
    acc[c + 5u] += w * subgroupShuffle(x, 5u);
    acc[c + 6u] += w * subgroupShuffle(x, 6u);
    acc[c + 7u] += w * subgroupShuffle(x, 7u);
  }
}

@compute @workgroup_size(WG)
fn subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {
  let flat = wid.y * nwg.x + wid.x;
  if (flat >= p.total) { return; }
  let bl = block(flat, WG);
  let i = bl.qb * WG + lid;
  begin(i, bl);
  for (var j0 = 0u; j0 < bl.kEnd; j0 += 2u) {
    loadRows(j0, sgid % 8u, bl);
    let w = softmaxStep(vec2f(logit(rowDot(0u), i, j0, bl), logit(rowDot(1u), i, j0 + 1u, bl)));
    addRow(0u, w.x);
    addRow(1u, w.y);
  }
  finish(i, bl);
}

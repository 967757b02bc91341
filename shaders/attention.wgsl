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

override DH: u32 = 64u;             // head dim, at most 128 (4 · 32 chunks)
override WG: u32 = 32u;             // invocations per workgroup
override TK: u32 = 16u;             // keys per workgroup-memory tile (`tiled`)
override DV: u32 = (DH + 3u) / 4u;  // vec4s per head row

const LOWEST = -3.4028234663852886e38;  // below every finite logit: marks masked keys
const LOG2E = 1.4426950408889634;

@group(0) @binding(0) var<uniform> p: Params;
// q, k, v elements: vec4<T> when DH % 4 == 0 (one load per 4 values), else T (attention.ts swaps
// this line). The loaders below type-check with either, for T f32 and f16 (vec4<T>(x) of a T or a
// vec4<T>, then f32: vec4f(x) of an f16 scalar is no valid conversion).
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
  if (VEC) { return vec4f(vec4<T>(q[base / 4u + c])); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = f32(vec4<T>(q[base + 4u * c + t]).x); } }
  return r;
}
fn loadK(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(vec4<T>(k[base / 4u + c])); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = f32(vec4<T>(k[base + 4u * c + t]).x); } }
  return r;
}
fn loadV(base: u32, c: u32) -> vec4f {
  if (VEC) { return vec4f(vec4<T>(v[base / 4u + c])); }
  var r = vec4f(0.0);
  for (var t = 0u; t < 4u; t++) { if (4u * c + t < DH) { r[t] = f32(vec4<T>(v[base + 4u * c + t]).x); } }
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

// ---- subgroup variant: compiled with `enable subgroups;` and shaders/subgroupRows.wgsl prepended ----
// One invocation owns one query row. Its q and its output accumulator are a Row: up to 4 groups
// of 8 vec4 chunks, held in struct members that are only ever named, never indexed, so they stay
// in registers. (As arrays indexed by a loop counter over the head dim they did not: lavapipe
// leaves a 16- or 32-iteration loop rolled and the arrays in per-lane memory.) Groups past G are
// never read or written: G is an override, so the `G > n` branches fold away.
// Keys go two at a time: two scores, one rescale of the accumulator, two updates (four per step
// made code that lavapipe took ~50% longer to compile, for no speed).
// Lane t (of the first 8 of a subgroup) holds chunk 8g + t of group g of the two current K and V
// rows, and hands it round with subgroupShuffle by literal lane ids; every other lane repeats lane
// t % 8.

override G: u32 = (DV + 7u) / 8u;  // chunk groups of 8 vec4s per head row, 1..4

// Group, Row and groupDot: shaders/subgroupRows.wgsl, prepended.
// One lane's chunk of a K row and of a V row, per group.
struct Part { k: vec4f, v: vec4f }
struct Parts { g0: Part, g1: Part, g2: Part, g3: Part }

fn qChunk(base: u32, c: u32) -> vec4f {
  if (c >= DV) { return vec4f(0.0); }
  return loadQ(base, c) * p.scale;
}

fn qGroup(base: u32, g: u32) -> Group {
  let c = 8u * g;
  return Group(qChunk(base, c), qChunk(base, c + 1u), qChunk(base, c + 2u), qChunk(base, c + 3u),
               qChunk(base, c + 4u), qChunk(base, c + 5u), qChunk(base, c + 6u), qChunk(base, c + 7u));
}

// Query row i's q, pre-scaled (zeros past DV).
fn qRow(i: u32, bl: Block) -> Row {
  let base = rowBase(min(i, p.L - 1u), p.qOff, bl);
  var r: Row;
  r.g0 = qGroup(base, 0u);
  if (G > 1u) { r.g1 = qGroup(base, 1u); }
  if (G > 2u) { r.g2 = qGroup(base, 2u); }
  if (G > 3u) { r.g3 = qGroup(base, 3u); }
  return r;
}

fn lanePart(j: u32, c: u32, bl: Block) -> Part {
  if (c >= DV) { return Part(vec4f(0.0), vec4f(0.0)); }
  return Part(loadK(rowBase(j, p.kOff, bl), c), loadV(rowBase(j, p.vOff, bl), c));
}

// This lane's parts of key j's K and V rows.
fn laneParts(j: u32, lane: u32, bl: Block) -> Parts {
  var x: Parts;
  x.g0 = lanePart(j, lane, bl);
  if (G > 1u) { x.g1 = lanePart(j, 8u + lane, bl); }
  if (G > 2u) { x.g2 = lanePart(j, 16u + lane, bl); }
  if (G > 3u) { x.g3 = lanePart(j, 24u + lane, bl); }
  return x;
}

fn rowDot(q: Row, x: Parts) -> f32 {
  var d = groupDot(q.g0, x.g0.k);
  if (G > 1u) { d += groupDot(q.g1, x.g1.k); }
  if (G > 2u) { d += groupDot(q.g2, x.g2.k); }
  if (G > 3u) { d += groupDot(q.g3, x.g3.k); }
  return dot(d, vec4f(1.0));
}

// a·corr + w.x·(V row 0's group) + w.y·(V row 1's group), their chunks held by the lanes in x0, x1.
fn groupUpdate(a: Group, corr: f32, w: vec2f, x0: vec4f, x1: vec4f) -> Group {
  return Group(
    a.c0 * corr + w.x * subgroupShuffle(x0, 0u) + w.y * subgroupShuffle(x1, 0u),
    a.c1 * corr + w.x * subgroupShuffle(x0, 1u) + w.y * subgroupShuffle(x1, 1u),
    a.c2 * corr + w.x * subgroupShuffle(x0, 2u) + w.y * subgroupShuffle(x1, 2u),
    a.c3 * corr + w.x * subgroupShuffle(x0, 3u) + w.y * subgroupShuffle(x1, 3u),
    a.c4 * corr + w.x * subgroupShuffle(x0, 4u) + w.y * subgroupShuffle(x1, 4u),
    a.c5 * corr + w.x * subgroupShuffle(x0, 5u) + w.y * subgroupShuffle(x1, 5u),
    a.c6 * corr + w.x * subgroupShuffle(x0, 6u) + w.y * subgroupShuffle(x1, 6u),
    a.c7 * corr + w.x * subgroupShuffle(x0, 7u) + w.y * subgroupShuffle(x1, 7u));
}

fn rowUpdate(a: Row, corr: f32, w: vec2f, x0: Parts, x1: Parts) -> Row {
  var r: Row;
  r.g0 = groupUpdate(a.g0, corr, w, x0.g0.v, x1.g0.v);
  if (G > 1u) { r.g1 = groupUpdate(a.g1, corr, w, x0.g1.v, x1.g1.v); }
  if (G > 2u) { r.g2 = groupUpdate(a.g2, corr, w, x0.g2.v, x1.g2.v); }
  if (G > 3u) { r.g3 = groupUpdate(a.g3, corr, w, x0.g3.v, x1.g3.v); }
  return r;
}

// storeChunk writes nothing past DH, so a group's chunks past DV cost a bound check only.
fn storeGroup(i: u32, g: u32, a: Group, inv: f32, bl: Block) {
  let c = 8u * g;
  storeChunk(i, c, a.c0 * inv, bl);
  storeChunk(i, c + 1u, a.c1 * inv, bl);
  storeChunk(i, c + 2u, a.c2 * inv, bl);
  storeChunk(i, c + 3u, a.c3 * inv, bl);
  storeChunk(i, c + 4u, a.c4 * inv, bl);
  storeChunk(i, c + 5u, a.c5 * inv, bl);
  storeChunk(i, c + 6u, a.c6 * inv, bl);
  storeChunk(i, c + 7u, a.c7 * inv, bl);
}

@compute @workgroup_size(WG)
fn subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {
  let flat = wid.y * nwg.x + wid.x;
  if (flat >= p.total) { return; }
  let bl = block(flat, WG);
  let i = bl.qb * WG + lid;
  let lane = sgid % 8u;
  let q = qRow(i, bl);
  var acc: Row;
  var m = LOWEST;  // running max of the (log2-scaled) logits
  var l = 0.0;     // running sum of exp2(logit - m)
  for (var j0 = 0u; j0 < bl.kEnd; j0 += 2u) {
    let x0 = laneParts(j0, lane, bl);
    let x1 = laneParts(min(j0 + 1u, bl.kEnd - 1u), lane, bl);
    let s = vec2f(logit(rowDot(q, x0), i, j0, bl), logit(rowDot(q, x1), i, j0 + 1u, bl));
    // Online softmax over the two logits: rescale by the new max, add their weights.
    let mt = max(m, max(s.x, s.y));
    let corr = exp2(m - mt);
    let w = select(exp2(s - mt), vec2f(0.0), s <= vec2f(LOWEST));
    m = mt;
    l = l * corr + w.x + w.y;
    acc = rowUpdate(acc, corr, w, x0, x1);
  }
  if (i >= p.L) { return; }
  // No finite logit (every key masked by -inf): 0 rather than 0/0.
  let inv = select(1.0 / l, 0.0, m <= LOWEST);
  storeGroup(i, 0u, acc.g0, inv, bl);
  if (G > 1u) { storeGroup(i, 1u, acc.g1, inv, bl); }
  if (G > 2u) { storeGroup(i, 2u, acc.g2, inv, bl); }
  if (G > 3u) { storeGroup(i, 3u, acc.g3, inv, bl); }
}

// Non-maximum suppression with torchvision.ops.nms semantics, in four stages (entry points):
//   keys       one (sort key, box index) pair per box; boxes failing the score threshold get key 0
//   sort_step  one compare-exchange step of a bitonic sort: best key first, lower index on ties
//   sort_local the steps whose compare distance stays inside a block of 2 * WG elements, in
//              workgroup memory: one dispatch instead of one per step
//   build_mask bit b of mask[i * words + c] set when sorted box i suppresses sorted box c*32+b (> i),
//              both taking part
//   greedy     one workgroup walks the sorted boxes, OR-ing kept rows into a removed bitset in
//              workgroup memory (filtered boxes start out removed)
// as torchvision's CUDA nms does (sort, parallel IoU bitmask, sequential pass over the mask).
// BATCHED: boxes only suppress boxes with the same label (torchvision's batched_nms).

struct Params {
  count: u32,       // K boxes
  padded: u32,      // sort length: a power of two >= K
  words: u32,       // ceil(K / 32): u32 words per mask row
  key_min: u32,     // smallest sort key that passes the score threshold
  nan_passes: u32,  // 1 when NaN scores take part (no score threshold)
  iou_thr: f32,     // iouThreshold rounded to f32
  iou_eq: u32,      // 1 when IoU == iou_thr also suppresses (the f32 rounding went up)
  max_out: u32,     // length of out
  k: u32,           // bitonic block size of this sort_step (sort_local: 0 = every stage up to 2 * WG)
  j: u32,           // bitonic compare distance of this sort_step
}

override WG: u32 = 256u;
override BATCHED: u32 = 0u;
// Greedy's removed bitset lives in workgroup memory: MAX_WORDS * 32 boxes at most.
const MAX_WORDS = 512u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> boxes: array<f32>;        // [K, 4] x1 y1 x2 y2
@group(0) @binding(2) var<storage, read> scores: array<u32>;       // [K] f32 bit patterns
@group(0) @binding(3) var<storage, read> labels: array<i32>;       // [K], read only when BATCHED
@group(0) @binding(4) var<storage, read_write> order: array<vec2u>; // [padded] (key, box index)
@group(0) @binding(5) var<storage, read_write> mask: array<u32>;   // [K * words]
@group(0) @binding(6) var<storage, read_write> out: array<i32>;    // [max_out] kept indices, -1 after

fn flat_id(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

// Keys order like the scores as torch.sort compares them: integer ops on the bits, so no device
// flushes denormals or reorders -0 / +0 (equal, so the index decides); NaN above everything.
// Key 0 is no float's key: it marks filtered boxes and sort padding.
fn score_key(bits: u32) -> u32 {
  let magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) { return select(0u, 0xffffffffu, p.nan_passes == 1u); }
  let b = select(bits, 0u, magnitude == 0u);
  let key = select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
  return select(0u, key, key >= p.key_min);
}

@compute @workgroup_size(WG)
fn keys(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = flat_id(wid, nwg, lid);
  if (i >= p.padded) { return; }
  var key = 0u;
  if (i < p.count) { key = score_key(scores[i]); }
  order[i] = vec2u(key, i);
}

// Whether (key, index) b sorts before a: a higher key, or an equal key and a lower index.
fn sorts_before(b: vec2u, a: vec2u) -> bool {
  return b.x > a.x || (b.x == a.x && b.y < a.y);
}

// Compare-exchange of elements i and i + j, one per invocation. Blocks of k elements alternate
// best-first / worst-first; after the last stage (k = padded) the whole array is best-first.
// Keys are unique with the index as tie-break, so the result is the stable order.
@compute @workgroup_size(WG)
fn sort_step(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let t = flat_id(wid, nwg, lid);
  if (t >= p.padded / 2u) { return; }
  let i = (t / p.j) * 2u * p.j + t % p.j;
  let a = order[i];
  let b = order[i + p.j];
  if (sorts_before(b, a) == ((i & p.k) == 0u)) {
    order[i] = b;
    order[i + p.j] = a;
  }
}

// Sorting dispatches cost more than their work on CPU adapters: sort_local runs every step with
// j < 2 * WG of a stage (p.k), or with p.k = 0 every stage up to 2 * WG, on one block per workgroup.
const LOCAL = 512u; // 2 * WG elements, WG <= 256
var<workgroup> local_order: array<vec2u, LOCAL>;

@compute @workgroup_size(WG)
fn sort_local(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let size = min(2u * WG, p.padded);
  let base = (wid.y * nwg.x + wid.x) * size;
  if (base >= p.padded) { return; }
  for (var e = lid; e < size; e += WG) { local_order[e] = order[base + e]; }
  workgroupBarrier();
  var k = select(p.k, 2u, p.k == 0u);
  let k_last = select(p.k, size, p.k == 0u);
  loop {
    if (k > k_last) { break; }
    for (var j = min(k, size) / 2u; j >= 1u; j /= 2u) {
      if (lid < size / 2u) {
        let i = (lid / j) * 2u * j + lid % j;
        let a = local_order[i];
        let b = local_order[i + j];
        if (sorts_before(b, a) == (((base + i) & k) == 0u)) {
          local_order[i] = b;
          local_order[i + j] = a;
        }
      }
      workgroupBarrier();
    }
    k *= 2u;
  }
  for (var e = lid; e < size; e += WG) { order[base + e] = local_order[e]; }
}

fn sorted_box(pos: u32) -> vec4f {
  let b = order[pos].y * 4u;
  return vec4f(boxes[b], boxes[b + 1u], boxes[b + 2u], boxes[b + 3u]);
}

// torchvision's test, in its f32 operation order: IoU = inter / (area_a + area_b - inter) > thr,
// with thr compared as the f64 it is there (iou_thr / iou_eq encode that exactly).
fn suppresses(a: vec4f, b: vec4f) -> bool {
  let area_a = (a.z - a.x) * (a.w - a.y);
  let area_b = (b.z - b.x) * (b.w - b.y);
  let w = max(0.0, min(a.z, b.z) - max(a.x, b.x));
  let h = max(0.0, min(a.w, b.w) - max(a.y, b.y));
  let inter = w * h;
  let area_union = area_a + area_b - inter;
  // WGSL leaves x / 0 undefined: torchvision gets +inf (suppresses) for inter > 0, NaN (never) for 0.
  if (area_union == 0.0) { return inter > 0.0; }
  let iou = inter / area_union;
  return iou > p.iou_thr || (p.iou_eq == 1u && iou == p.iou_thr);
}

@compute @workgroup_size(WG)
fn build_mask(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let g = flat_id(wid, nwg, lid);
  if (g >= p.count * p.words) { return; }
  let i = g / p.words;
  let base = (g % p.words) * 32u;
  let end = min(base + 32u, p.count);
  var bits = 0u;
  // Filtered boxes (key 0) sort last and start out removed in greedy, which never reads their
  // bits: rows and columns of them are skipped, so the work grows with the boxes taking part.
  if (i + 1u < end && order[i].x != 0u) {
    let a = sorted_box(i);
    let label = labels[order[i].y * BATCHED];
    for (var j = max(base, i + 1u); j < end; j++) {
      if (order[j].x == 0u) { break; }
      if ((BATCHED == 0u || labels[order[j].y] == label) && suppresses(a, sorted_box(j))) {
        bits |= 1u << (j - base);
      }
    }
  }
  mask[g] = bits;
}

var<workgroup> removed: array<u32, MAX_WORDS>;
// The current word's 32 diagonal mask words (row w*32+b, word w), double-buffered by w's parity so
// that loading word w+1's never races with reading word w's.
var<workgroup> diagonal: array<array<u32, 32>, 2>;

// Walks the sorted boxes 32 at a time. Every invocation walks the bits of the current word the
// same way (one barrier per word instead of one per box), keeping a box unless an earlier kept box
// removed it; then the kept rows are OR-ed into the later words, each word by one invocation.
// The walk is the serial critical path, so it reads only workgroup memory.
@compute @workgroup_size(WG)
fn greedy(@builtin(local_invocation_index) lid: u32) {
  // Filtered boxes (key 0) and the bits past K start out removed.
  for (var w = lid; w < p.words; w += WG) {
    var bits = 0u;
    for (var b = 0u; b < 32u; b++) {
      let i = w * 32u + b;
      if (i >= p.count || order[i].x == 0u) { bits |= 1u << b; }
    }
    removed[w] = bits;
  }
  var kept = 0u;
  for (var w = 0u; w < p.words; w++) {
    let i0 = w * 32u;
    if (lid < 32u && i0 + lid < p.count) { diagonal[w & 1u][lid] = mask[(i0 + lid) * p.words + w]; }
    var current = workgroupUniformLoad(&removed[w]);
    var kept_bits = 0u;
    while (current != 0xffffffffu) {
      let b = countTrailingZeros(~current);
      kept_bits |= 1u << b;
      current |= diagonal[w & 1u][b] | (1u << b);
      if (lid == 0u && kept < p.max_out) { out[kept] = i32(order[i0 + b].y); }
      kept++;
    }
    for (var w2 = w + 1u + lid; w2 < p.words; w2 += WG) {
      var acc = removed[w2];
      var rows = kept_bits;
      while (rows != 0u) {
        acc |= mask[(i0 + countTrailingZeros(rows)) * p.words + w2];
        rows &= rows - 1u;
      }
      removed[w2] = acc;
    }
  }
  for (var q = min(kept, p.max_out) + lid; q < p.max_out; q += WG) { out[q] = -1; }
}

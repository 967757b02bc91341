// Rows in registers for the subgroup variants of attention and its backward (prepended to their
// shaders after `enable subgroups;`): a head row of up to 32 vec4 chunks is 4 Groups of 8, held in
// struct members that are only ever named, never indexed, so they stay in registers (arrays
// indexed by a loop counter over the head dim do not: lavapipe leaves the loop rolled and the
// arrays in per-lane memory). The other side's rows are spread over the first 8 lanes of a
// subgroup, lane t holding chunk 8g + t of group g, and handed round by subgroupShuffle with
// literal lane ids.

struct Group { c0: vec4f, c1: vec4f, c2: vec4f, c3: vec4f, c4: vec4f, c5: vec4f, c6: vec4f, c7: vec4f }
struct Row { g0: Group, g1: Group, g2: Group, g3: Group }

// A group times the group of a row whose chunks the first 8 lanes hold in x (lane t: chunk t).
fn groupDot(a: Group, x: vec4f) -> vec4f {
  return a.c0 * subgroupShuffle(x, 0u) + a.c1 * subgroupShuffle(x, 1u)
       + a.c2 * subgroupShuffle(x, 2u) + a.c3 * subgroupShuffle(x, 3u)
       + a.c4 * subgroupShuffle(x, 4u) + a.c5 * subgroupShuffle(x, 5u)
       + a.c6 * subgroupShuffle(x, 6u) + a.c7 * subgroupShuffle(x, 7u);
}

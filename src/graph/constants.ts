import type { Tensor } from '../tensor.js';

// Reference counts of constant tensors across plans; owned tensors die with their last plan.
const constantRefs = new WeakMap<Tensor, { count: number; owned: boolean }>();

export function markOwned(t: Tensor): void {
  const r = constantRefs.get(t) ?? { count: 0, owned: false };
  r.owned = true;
  constantRefs.set(t, r);
}

export function retainConstant(t: Tensor): void {
  const r = constantRefs.get(t) ?? { count: 0, owned: false };
  r.count++;
  constantRefs.set(t, r);
}

export function releaseConstant(t: Tensor): void {
  const r = constantRefs.get(t);
  if (!r) return;
  r.count--;
  if (r.count <= 0 && r.owned) t.dispose();
}

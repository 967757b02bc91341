// Awaiting WebGPU work in Node without a busy main thread. While any of its operations is pending
// (a buffer map, onSubmittedWorkDone), Dawn's Node binding polls for completion on the main thread
// with back-to-back setImmediate callbacks, a core kept at 100%. On a CPU adapter (lavapipe) that
// core is one the adapter's own worker threads wanted: on 2 cores its kernels ran at little more
// than one core's speed (bench/RESULTS.md). Here the main thread instead sleeps `sleepMs` between
// event-loop turns until the operation settles; Dawn's poll still runs once per turn, so
// completions are seen within about sleepMs, and other timers and I/O keep running.

const cell = new Int32Array(new SharedArrayBuffer(4));
let pending = 0;
let looping = false;
let sleepMs = 0;

/** One sleep per event-loop turn while any quiet wait is pending, however many there are. */
async function loop(): Promise<void> {
  looping = true;
  try {
    while (pending > 0) {
      Atomics.wait(cell, 0, 0, sleepMs);
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    looping = false;
  }
}

/** `promise`'s outcome, with the main thread sleeping `ms` per event-loop turn until it settles. */
export async function waitQuietly<T>(promise: Promise<T>, ms: number): Promise<T> {
  if (!(ms > 0)) return promise;
  sleepMs = ms;
  pending++;
  if (!looping) void loop();
  try {
    return await promise;
  } finally {
    pending--;
  }
}

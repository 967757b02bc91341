import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  MAX_HEADER_BYTES,
  SafetensorsError,
  SafetensorsFile,
  openCheckpoint,
  parseSafetensorsHeader,
  readSafetensors,
  uploadTensor,
  type SafetensorsEntry,
} from '../../src/io/safetensors.js';
import { useGpu } from '../util/gpu.js';
import { rng } from '../util/random.js';
import { bytesOf, encodeSafetensors, f32, rawSafetensors, writeSafetensors, type RawTensor } from '../util/safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'ovgpu-st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
const tmp = (name = 'x.safetensors') => join(dir, `${serial++}-${name}`);

/** Writes a file and expects opening it to fail with a SafetensorsError naming the file and `mention`. */
async function expectRejected(bytes: Buffer, mention: RegExp | string): Promise<SafetensorsError> {
  const path = tmp();
  writeFileSync(path, bytes);
  let caught: unknown;
  try {
    (await SafetensorsFile.open(path)).close();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(SafetensorsError);
  const message = (caught as Error).message;
  expect(message.startsWith(`${path}: `)).toBe(true);
  expect(message).toMatch(mention);
  return caught as SafetensorsError;
}

const u16 = (...bits: number[]): Uint8Array => bytesOf(new Uint16Array(bits));

describe('safetensors decoding', () => {
  it('decodes F32, F16, BF16, I64 and I32 (unaligned offsets included)', async () => {
    const path = writeSafetensors(tmp(), {
      // 1 byte-pair first so that every later tensor starts at an offset that is not a multiple of 4.
      h: { dtype: 'F16', shape: [7], bytes: u16(0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x3555, 0x8000) },
      b: { dtype: 'BF16', shape: [2, 2], bytes: u16(0x3f80, 0xc0a0, 0x7f80, 0x0001) },
      f: { dtype: 'F32', shape: [3], bytes: bytesOf(new Float32Array([1.5, -0.25, 3e38])) },
      l: { dtype: 'I64', shape: [3], bytes: bytesOf(new BigInt64Array([-1n, 2147483647n, -2147483648n])) },
      i: { dtype: 'I32', shape: [1, 2], bytes: bytesOf(new Int32Array([-7, 123456789])) },
      s: { dtype: 'F32', shape: [], bytes: bytesOf(new Float32Array([4.5])) },
      z: { dtype: 'F32', shape: [0, 3], bytes: new Uint8Array(0) },
    });
    const t = await readSafetensors(path);
    const h = t.get('h')!;
    expect(h.data).toBeInstanceOf(Float32Array);
    // 0x3555 is the f16 nearest to 1/3: 1 + 341/1024 times 2^-2.
    expect(Array.from(h.data)).toEqual([1, -2, 65504, 2 ** -24, Infinity, (1 + 341 / 1024) / 4, -0]);
    const b = t.get('b')!;
    expect(b.shape).toEqual([2, 2]);
    // bf16 is the top half of an f32: 0x0001 is the f32 with bits 0x00010000 = 2^-133 (subnormal).
    expect(Array.from(b.data)).toEqual([1, -5, Infinity, 2 ** -133]);
    expect(Array.from(t.get('f')!.data)).toEqual([1.5, -0.25, Math.fround(3e38)]);
    const l = t.get('l')!;
    expect(l.data).toBeInstanceOf(Int32Array);
    expect(Array.from(l.data)).toEqual([-1, 2147483647, -2147483648]);
    expect(Array.from(t.get('i')!.data)).toEqual([-7, 123456789]);
    expect(t.get('s')!.shape).toEqual([]);
    expect(Array.from(t.get('s')!.data)).toEqual([4.5]);
    expect(t.get('z')!.data.length).toBe(0);
  });

  it('rejects an I64 value outside i32, naming the tensor and the index', async () => {
    const path = writeSafetensors(tmp(), { big: { dtype: 'I64', shape: [2], bytes: bytesOf(new BigInt64Array([0n, 2n ** 31n])) } });
    const f = await SafetensorsFile.open(path);
    await expect(f.get('big')).rejects.toThrow(/"big": I64 value 2147483648 at 1 does not fit/);
    f.close();
  });

  it('keeps metadata and header order, reads names, and reports a missing tensor', async () => {
    const path = writeSafetensors(tmp(), { b: f32(1), a: f32(2, 3) }, { format: 'pt' });
    const f = await SafetensorsFile.open(path);
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(f.names).toEqual(['b', 'a']);
    expect(f.entry('a')).toMatchObject({ dtype: 'F32', shape: [2], begin: 4, end: 12 });
    expect(() => f.entry('c')).toThrow(SafetensorsError);
    await expect(f.get('c')).rejects.toThrow(/no tensor named "c"/);
    f.close();
    await expect(f.get('a')).rejects.toThrow(/closed/);
  });

  it('accepts tensors listed out of offset order when they tile the data', async () => {
    const header = JSON.stringify({
      second: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
      first: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
    });
    const path = tmp();
    writeFileSync(path, rawSafetensors(header, bytesOf(new Float32Array([10, 20]))));
    const t = await readSafetensors(path);
    expect(Array.from(t.get('first')!.data)).toEqual([10]);
    expect(Array.from(t.get('second')!.data)).toEqual([20]);
  });
});

describe('safetensors hostility', () => {
  const good = encodeSafetensors({ w: f32(1, 2, 3, 4), b: { dtype: 'F16', shape: [2], bytes: u16(0x3c00, 0x4000) } });
  const goodFile = rawSafetensors(good.header, good.data);

  it('rejects every truncation of a valid file', async () => {
    const path = tmp();
    for (let n = 0; n < goodFile.length; n++) {
      writeFileSync(path, goodFile);
      truncateSync(path, n);
      await expect(SafetensorsFile.open(path), `truncated to ${n} bytes`).rejects.toThrow(SafetensorsError);
    }
    // Cut inside the data: the error names the tensor that no longer fits.
    await expectRejected(goodFile.subarray(0, goodFile.length - 1), /tensor "b": data_offsets end 20 beyond the 19 data bytes/);
    await expectRejected(goodFile.subarray(0, 5), /too short|beyond the end/);
  });

  it('rejects trailing bytes after the last tensor', async () => {
    await expectRejected(Buffer.concat([goodFile, Buffer.from([0])]), /tensors cover 20 of the 21 data bytes/);
  });

  it('rejects a header length beyond the file and a 100 MB (or 2^64-1) header claim without reading it', async () => {
    await expectRejected(rawSafetensors(good.header, good.data, BigInt(good.header.length + good.data.length + 1)), /header length \d+ is beyond the end/);
    await expectRejected(rawSafetensors(good.header, good.data, 100n * 1024n * 1024n), new RegExp(`exceeds the ${MAX_HEADER_BYTES}-byte limit`));
    await expectRejected(rawSafetensors(good.header, good.data, 2n ** 64n - 1n), /exceeds the \d+-byte limit/);
  });

  it('rejects overlapping offsets, gaps, and end before begin, naming the tensor', async () => {
    const data = new Uint8Array(8);
    const two = (a: [number, number], b: [number, number]) =>
      JSON.stringify({ a: { dtype: 'F32', shape: [1], data_offsets: a }, b: { dtype: 'F32', shape: [1], data_offsets: b } });
    await expectRejected(rawSafetensors(two([0, 4], [2, 6]), data), /tensor "b": data starts at 2, expected 4 \(overlaps/);
    await expectRejected(rawSafetensors(two([0, 4], [0, 4]), data), /data starts at 0, expected 4 \(overlaps/);
    await expectRejected(rawSafetensors(two([0, 4], [8, 12]), new Uint8Array(12)), /tensor "b": data starts at 8, expected 4 \(gap/);
    await expectRejected(rawSafetensors(two([4, 8], [4, 0]), data), /tensor "b": data_offsets \[4, 0\] end before begin/);
  });

  it('rejects a byte size that does not match dtype and shape', async () => {
    const header = JSON.stringify({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } });
    await expectRejected(rawSafetensors(header, new Uint8Array(8)), /tensor "w": 8 bytes for F32 of shape \[3\], expected 12/);
    const h16 = JSON.stringify({ w: { dtype: 'BF16', shape: [2, 2], data_offsets: [0, 16] } });
    await expectRejected(rawSafetensors(h16, new Uint8Array(16)), /tensor "w": 16 bytes for BF16 of shape \[2, 2\], expected 8/);
  });

  it('rejects duplicate tensor names and duplicate fields that JSON.parse would hide', async () => {
    const entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
    await expectRejected(rawSafetensors(`{"w":${entry},"w":${entry}}`, new Uint8Array(4)), /tensor "w" appears twice/);
    // The same name spelled with an escape is the same key.
    await expectRejected(rawSafetensors(`{"w":${entry}, "\\u0077" :${entry}}`, new Uint8Array(4)), /tensor "w" appears twice/);
    await expectRejected(
      rawSafetensors('{"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)),
      /tensor "w": field "dtype" appears twice/,
    );
    // Keys inside strings or arrays are not keys.
    const ok = tmp();
    writeFileSync(ok, rawSafetensors(`{"__metadata__":{"a":"\\"w\\":1","b":"[\\"w\\"]"},"w":${entry}}`, new Uint8Array(4)));
    const opened = await SafetensorsFile.open(ok);
    expect(opened.names).toEqual(['w']);
    opened.close();
  });

  it('rejects bad JSON, bad UTF-8 and malformed entries', async () => {
    const d4 = new Uint8Array(4);
    await expectRejected(rawSafetensors('{"w": {', d4), /not valid UTF-8 JSON/);
    await expectRejected(Buffer.concat([rawSafetensors('{"w":1}').subarray(0, 8), Buffer.from([0x7b, 0xff, 0x7d])]), /header length/);
    const badUtf8 = Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]);
    const withLen = Buffer.alloc(8);
    withLen.writeBigUInt64LE(BigInt(badUtf8.length));
    await expectRejected(Buffer.concat([withLen, badUtf8]), /not valid UTF-8 JSON/);
    await expectRejected(rawSafetensors('\ufeff{}'), /not valid UTF-8 JSON/);
    await expectRejected(rawSafetensors('[]'), /must be a JSON object/);
    await expectRejected(rawSafetensors('{"w": 3}', d4), /tensor "w": entry must be an object/);
    await expectRejected(rawSafetensors('{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}', new Uint8Array(8)), /tensor "w": unsupported dtype "F64"/);
    await expectRejected(rawSafetensors('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', d4), /tensor "w": shape must be/);
    await expectRejected(rawSafetensors('{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}', d4), /tensor "w": shape must be/);
    await expectRejected(rawSafetensors('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', d4), /tensor "w": data_offsets must be/);
    await expectRejected(rawSafetensors('{"w":{"dtype":"F32","shape":[1],"data_offsets":["0",4]}}', d4), /tensor "w": data_offsets must be/);
    await expectRejected(rawSafetensors('{"w":{"dtype":"F32","shape":[1]}}', d4), /tensor "w": data_offsets must be/);
    await expectRejected(rawSafetensors('{"__metadata__":{"a":1}}'), /__metadata__ must be an object of strings/);
    await expectRejected(Buffer.alloc(0), /0 bytes is too short/);
  });

  it('survives 1000 random mutations of a valid header: each is an error or a still-valid description', async () => {
    const tensors: Record<string, RawTensor> = {
      'text.weight': { dtype: 'F16', shape: [3, 2], bytes: u16(1, 2, 3, 4, 5, 6) },
      ids: { dtype: 'I64', shape: [2], bytes: bytesOf(new BigInt64Array([5n, -6n])) },
      bias: f32(0.5, -1),
      idx: { dtype: 'I32', shape: [1, 1, 2], bytes: bytesOf(new Int32Array([1, 2])) },
    };
    const { header, data } = encodeSafetensors(tensors, { format: 'pt' });
    const alphabet = '0123456789"{}[],:-.eE \\ FBIN_x';
    const r = rng(20240611);
    const pick = (n: number) => Math.floor(r() * n);
    const sizes: Record<string, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4 };
    let rejected = 0;
    let accepted = 0;
    for (let trial = 0; trial < 1000; trial++) {
      const bytes = [...Buffer.from(header)];
      for (let m = 1 + pick(3); m > 0; m--) {
        const at = pick(bytes.length + 1);
        const ch = r() < 0.8 ? alphabet.charCodeAt(pick(alphabet.length)) : pick(256);
        const op = pick(4);
        if (op === 0) bytes[Math.min(at, bytes.length - 1)] = ch;
        else if (op === 1) bytes.splice(at, 0, ch);
        else if (op === 2) bytes.splice(at, 1 + pick(4));
        else bytes.splice(at, 0, ...bytes.slice(pick(bytes.length), pick(bytes.length)));
      }
      // Sometimes the data section is also a little off.
      const dataBytes = data.length + (r() < 0.1 ? pick(9) - 4 : 0);
      let entries: Map<string, SafetensorsEntry>;
      try {
        entries = parseSafetensorsHeader('mutant', Uint8Array.from(bytes), dataBytes).entries;
      } catch (err) {
        expect(err, `trial ${trial}`).toBeInstanceOf(SafetensorsError);
        expect((err as Error).message.startsWith('mutant: ')).toBe(true);
        rejected++;
        continue;
      }
      // Accepted: check the description independently of the parser.
      accepted++;
      const ranges = [...entries.values()].map((e) => {
        expect(Object.keys(sizes)).toContain(e.dtype);
        expect(e.end - e.begin).toBe(e.shape.reduce((a, b) => a * b, 1) * sizes[e.dtype]!);
        return [e.begin, e.end] as const;
      });
      ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      let at = 0;
      for (const [b, e] of ranges) {
        expect(b).toBe(at);
        at = e;
      }
      expect(at).toBe(dataBytes);
    }
    expect(rejected).toBeGreaterThan(800);
    expect(accepted).toBeGreaterThan(0);
  });

  it('survives mutations of whole files, reading every tensor of those it accepts', async () => {
    const { header, data } = encodeSafetensors({ a: { dtype: 'I64', shape: [2], bytes: bytesOf(new BigInt64Array([1n, 2n])) }, b: f32(1, 2, 3) });
    const file = rawSafetensors(header, data);
    const r = rng(7);
    const path = tmp();
    for (let trial = 0; trial < 200; trial++) {
      const bytes = Buffer.from(file);
      for (let m = 1 + Math.floor(r() * 3); m > 0; m--) bytes[Math.floor(r() * bytes.length)] = Math.floor(r() * 256);
      writeFileSync(path, bytes);
      try {
        const f = await SafetensorsFile.open(path);
        for (const n of f.names) await f.get(n);
        f.close();
      } catch (err) {
        expect(err, `trial ${trial}`).toBeInstanceOf(SafetensorsError);
      }
    }
  });
});

describe('sharded checkpoints', () => {
  function shardedFolder(weightMap: Record<string, string>, shards: Record<string, Record<string, RawTensor>>, indexText?: string): string {
    const folder = join(dir, `ckpt-${serial++}`);
    mkdirSync(folder);
    for (const [file, tensors] of Object.entries(shards)) writeSafetensors(join(folder, file), tensors);
    writeFileSync(join(folder, 'model.safetensors.index.json'), indexText ?? JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
    return folder;
  }
  const shards = {
    'model-00001-of-00002.safetensors': { 'a.weight': f32(1, 2), 'a.bias': f32(3) },
    'model-00002-of-00002.safetensors': { 'b.weight': { dtype: 'BF16', shape: [1], bytes: u16(0x4040) } },
  };
  const weightMap = {
    'a.weight': 'model-00001-of-00002.safetensors',
    'a.bias': 'model-00001-of-00002.safetensors',
    'b.weight': 'model-00002-of-00002.safetensors',
  };

  it('opens every shard an index lists, from the folder or the index path', async () => {
    const folder = shardedFolder(weightMap, shards);
    for (const where of [folder, join(folder, 'model.safetensors.index.json')]) {
      const c = await openCheckpoint(where);
      expect(c.path).toBe(join(folder, 'model.safetensors.index.json'));
      expect(c.files.length).toBe(2);
      expect(c.names).toEqual(['a.weight', 'a.bias', 'b.weight']);
      expect(Array.from((await c.get('a.weight')).data)).toEqual([1, 2]);
      expect(Array.from((await c.get('b.weight')).data)).toEqual([3]);
      expect(c.entry('b.weight')).toMatchObject({ dtype: 'BF16', shape: [1] });
      expect(c.file('a.bias').path).toBe(join(folder, 'model-00001-of-00002.safetensors'));
      expect(c.has('a.bias') && !c.has('c')).toBe(true);
      await expect(c.get('c')).rejects.toThrow(/no tensor named "c"/);
      c.close();
    }
  });

  it('opens a folder with model.safetensors and a single file path', async () => {
    const folder = join(dir, `single-${serial++}`);
    mkdirSync(folder);
    const file = writeSafetensors(join(folder, 'model.safetensors'), { w: f32(5) });
    for (const where of [folder, file]) {
      const c = await openCheckpoint(where);
      expect(c.path).toBe(file);
      expect(c.names).toEqual(['w']);
      expect(Array.from((await c.get('w')).data)).toEqual([5]);
      c.close();
    }
    const empty = join(dir, `empty-${serial++}`);
    mkdirSync(empty);
    await expect(openCheckpoint(empty)).rejects.toThrow(/neither model.safetensors nor model.safetensors.index.json/);
    await expect(openCheckpoint(join(empty, 'nope.safetensors'))).rejects.toThrow(/cannot open/);
  });

  it('rejects a tensor in two shards, a listed tensor its shard lacks, and bad indexes', async () => {
    const dup = shardedFolder(weightMap, { ...shards, 'model-00002-of-00002.safetensors': { 'b.weight': f32(1), 'a.bias': f32(2) } });
    await expect(openCheckpoint(dup)).rejects.toThrow(/tensor "a.bias" is in two shards: .*model-00001-of-00002.safetensors and .*model-00002-of-00002.safetensors/);
    const lacking = shardedFolder({ ...weightMap, 'c.weight': 'model-00002-of-00002.safetensors' }, shards);
    await expect(openCheckpoint(lacking)).rejects.toThrow(/tensor "c.weight" is listed in shard "model-00002-of-00002.safetensors", which does not contain it/);
    const missing = shardedFolder({ ...weightMap, 'c.weight': 'model-00003.safetensors' }, shards);
    await expect(openCheckpoint(missing)).rejects.toThrow(/model-00003.safetensors: cannot open/);
    const escaping = shardedFolder({ w: '../model.safetensors' }, {});
    await expect(openCheckpoint(escaping)).rejects.toThrow(/tensor "w": shard "..\/model.safetensors" must be a file name beside the index/);
    await expect(openCheckpoint(shardedFolder({}, {}, '{"weight_map": [1]}'))).rejects.toThrow(/index has no weight_map object/);
    await expect(openCheckpoint(shardedFolder({}, {}, '{"weight_map": {}}'))).rejects.toThrow(/weight_map lists no tensors/);
    await expect(openCheckpoint(shardedFolder({}, {}, '{"weight_map": {'))).rejects.toThrow(/index is not valid JSON/);
    const twice = '{"weight_map": {"w": "model-00002-of-00002.safetensors", "w": "model-00001-of-00002.safetensors"}}';
    await expect(openCheckpoint(shardedFolder({}, shards, twice))).rejects.toThrow(/key "weight_map" → "w" appears twice in the index/);
    // A bad shard is reported with the shard's own path.
    const broken = shardedFolder(weightMap, shards);
    truncateSync(join(broken, 'model-00002-of-00002.safetensors'), 9);
    await expect(openCheckpoint(broken)).rejects.toThrow(new RegExp(`${join(broken, 'model-00002-of-00002.safetensors')}: `));
  });
});

describe('uploadTensor', () => {
  const getGpu = useGpu();

  it('uploads one tensor as f32, f16 or i32 and refuses what does not fit', async () => {
    const gpu = await getGpu();
    const folder = join(dir, `up-${serial++}`);
    mkdirSync(folder);
    writeSafetensors(join(folder, 'model.safetensors'), {
      w: { dtype: 'BF16', shape: [2, 2], bytes: u16(0x3f80, 0xc0a0, 0x3eab, 0x0000) },
      ids: { dtype: 'I64', shape: [3], bytes: bytesOf(new BigInt64Array([49406n, 1n, 49407n])) },
      huge: f32(1, 70000),
    });
    const c = await openCheckpoint(folder);
    const before = gpu.stats();
    const w32 = await uploadTensor(gpu, c, 'w');
    expect(w32.dtype).toBe('f32');
    expect(w32.shape).toEqual([2, 2]);
    // 0x3eab = bf16 of 0.333984375 (= 0x3eab0000 as f32); it is exact in f16 too.
    expect(Array.from(await w32.read())).toEqual([1, -5, 0.333984375, 0]);
    const w16 = await uploadTensor(gpu, c, 'w', 'f16');
    expect(w16.dtype).toBe('f16');
    expect(Array.from(await w16.read())).toEqual([1, -5, 0.333984375, 0]);
    const ids = await uploadTensor(gpu, c, 'ids');
    expect(ids.dtype).toBe('i32');
    expect(Array.from(await ids.read())).toEqual([49406, 1, 49407]);
    for (const t of [w32, w16, ids]) t.dispose();
    const after = gpu.stats();
    await expect(uploadTensor(gpu, c, 'huge', 'f16')).rejects.toThrow(/tensor "huge": value 70000 at index 1 overflows f16/);
    await expect(uploadTensor(gpu, c, 'ids', 'f32')).rejects.toThrow(/tensor "ids": cannot upload I64 data as f32/);
    await expect(uploadTensor(gpu, c, 'w', 'i32')).rejects.toThrow(/tensor "w": cannot upload BF16 data as i32/);
    await expect(uploadTensor(gpu, c, 'nope')).rejects.toThrow(/no tensor named "nope"/);
    expect(gpu.stats()).toEqual(after);
    expect(after.liveBuffers).toBe(before.liveBuffers);
    c.close();
  });
});

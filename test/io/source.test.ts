// Loading from URLs (HTTP range requests), Blobs and bytes, checked in Node against a local server
// that counts what it sends: a checkpoint is read tensor by tensor, every byte exactly once.
import { readFileSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipModel, ClipTokenizer, OwlVitDetector, SafetensorsError, openCheckpoint, randomModel, readSafetensors, TINY_CLIP } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';
import { serveStatic, type StaticServer } from '../util/static-server.js';

const getGpu = useGpu();
const clipFiles = { '/clip/config.json': fixturePath('clip_tiny', 'config.json'), '/clip/model.safetensors': fixturePath('clip_tiny', 'weights_hf.safetensors') };
const io = (name: string) => fixtureTensor(loadFixture('clip_tiny', 'io.safetensors'), name).data as Float32Array;
let server: StaticServer;
let noRanges: StaticServer;
beforeAll(async () => {
  const routes = { ...clipFiles, '/owlvit/': fixturePath('owlvit_tiny'), '/bpe.txt.gz': fixturePath('bpe_simple_vocab_16e6.txt.gz') };
  server = await serveStatic(routes);
  noRanges = await serveStatic(routes, { ranges: false });
});
afterAll(async () => {
  await server?.close();
  await noRanges?.close();
});

describe('loading over HTTP', () => {
  it('ClipModel.load from a base URL reads the checkpoint with one range request per tensor, each byte once', async () => {
    const gpu = await getGpu();
    server.served.clear();
    const model = await ClipModel.load(gpu, `${server.url}/clip/`);
    const size = statSync(clipFiles['/clip/model.safetensors']).size;
    const ckpt = await openCheckpoint(fixturePath('clip_tiny', 'weights_hf.safetensors'));
    const tensors = ckpt.names.length;
    ckpt.close();
    const weights = server.served.get('/clip/model.safetensors')!;
    // HEAD, the header length, the header, then one range per tensor.
    expect(weights).toEqual({ requests: 3 + tensors, bytes: size });
    expect(server.served.get('/clip/config.json')!.bytes).toBe(statSync(clipFiles['/clip/config.json']).size);
    expectClose(await model.encodeImage(io('pixel_values'), [2, 3, 32, 32]), io('image_embeds_f64'), { scaleTol: 1e-4 });
    model.dispose();
  });

  it('a server without range support is read once whole, and gives the same model', async () => {
    const gpu = await getGpu();
    noRanges.served.clear();
    const model = await ClipModel.load(gpu, new URL(`${noRanges.url}/clip/`));
    expect(noRanges.served.get('/clip/model.safetensors')!.bytes).toBe(statSync(clipFiles['/clip/model.safetensors']).size);
    expectClose(await model.encodeImage(io('pixel_values'), [2, 3, 32, 32]), io('image_embeds_f64'), { scaleTol: 1e-4 });
    model.dispose();
  });

  it('OwlVitDetector.load from a URL matches the fixture; a missing folder or file is named', async () => {
    const gpu = await getGpu();
    const det = await OwlVitDetector.load(gpu, `${server.url}/owlvit/`);
    const inputs = await readSafetensors(`${server.url}/owlvit/inputs.safetensors`);
    const expected = loadFixture('owlvit_tiny', 'expected.safetensors');
    const out = await det.predict({ pixelValues: inputs.get('pixel_values')!.data as Float32Array, pixelShape: [2, 3, 32, 32], inputIds: inputs.get('input_ids')!.data as Int32Array, idsShape: [6, 16] });
    expectClose(out.logits, fixtureTensor(expected, 'logits').data, { scaleTol: 1e-4 });
    det.dispose();
    await expect(OwlVitDetector.load(gpu, `${server.url}/nothing/`)).rejects.toThrow(/config.json: no config.json in this folder/);
    await expect(ClipModel.load(gpu, `${server.url}/nothing/`)).rejects.toThrow(SafetensorsError);
    await expect(openCheckpoint(`${server.url}/clip/nope.safetensors`)).rejects.toThrow(/nope.safetensors: cannot open \(no such file or folder\)/);
  });

  it('ClipTokenizer.load from a URL gunzips with DecompressionStream', async () => {
    const tok = await ClipTokenizer.load(`${server.url}/bpe.txt.gz`);
    expect(Array.from(tok.encode('a photo of a cat').slice(0, 7))).toEqual([49406, 320, 1125, 539, 320, 2368, 49407]);
  });
});

describe('loading from bytes and Blobs', () => {
  it('a map of file names to bytes, Blobs or URLs loads the same model', async () => {
    const gpu = await getGpu();
    const config = readFileSync(clipFiles['/clip/config.json']);
    const weights = readFileSync(clipFiles['/clip/model.safetensors']);
    const sources = [
      { 'config.json': config, 'model.safetensors': new Blob([weights]) },
      new Map<string, ArrayBuffer | string>([['config.json', config.buffer.slice(config.byteOffset, config.byteOffset + config.length)], ['model.safetensors', `${server.url}/clip/model.safetensors`]]),
    ];
    for (const files of sources) {
      const model = await ClipModel.load(gpu, files);
      expectClose(await model.encodeImage(io('pixel_values'), [2, 3, 32, 32]), io('image_embeds_f64'), { scaleTol: 1e-4 });
      model.dispose();
    }
    await expect(ClipModel.load(gpu, { 'config.json': config })).rejects.toThrow(/folder holds neither model.safetensors nor model.safetensors.index.json/);
  });

  it('randomModel gives files in memory that load with their tokenizer', async () => {
    const gpu = await getGpu();
    const model = await ClipModel.load(gpu, randomModel('clip', TINY_CLIP, 3));
    expect(model.tokenizer).toBeDefined();
    expect((await model.encodeText(['a cat', 'a dog'])).length).toBe(2 * TINY_CLIP.embedDim);
    model.dispose();
  });
});

// OwlVitDetector.detect: images and query strings (or an example image) in, plain detections in
// each original image's pixels out. Built only on the detector's public calls: embedImage,
// queryText / queryImage and the post-processing.
import { TOKENIZER_FILES } from '../tokenizer/index.js';
import { preprocessOwlVitBatch, preprocessOwlv2Batch, type ImageInput } from '../preprocess/index.js';
import { checkFinite, checkInput, clipBox, encodeQuery } from '../inputs.js';
import type { OwlVitDetector, OwlVitImageEmbedding } from './detector.js';
import { bestQueries, cornerBoxes, sigmoid, type Detections } from './postprocess.js';
import { agreedKept, logitThreshold, type PlanNms } from './plan-nms.js';
import { NMS_MAX_BOXES } from '../../kernels/nms.js';

/** An image for detect: a path or encoded bytes, or pixels already preprocessed to the model's size. */
export type DetectImage = ImageInput | { pixelValues: Float32Array; originalSize: readonly [number, number] };

/**
 * What detect looks for: strings (the same for every image), one list of strings per image, or
 * an example image (with an optional box around the object, in that image's pixels).
 */
export type DetectQueries = readonly string[] | readonly (readonly string[])[] | { image: DetectImage; box?: readonly [number, number, number, number] };

/** detect's default minimum score. */
export const DETECT_THRESHOLD = 0.1;

export interface DetectOptions {
  /** Minimum score (default 0.1; for an image query the score is the reference's rescaled one). */
  threshold?: number;
  /**
   * IoU above which a lower-scoring box of the same query is dropped. Text queries: off by default,
   * like the reference; an image query: 0.3 by default, as the reference's image-guided post-processing.
   */
  nms?: number;
  /** At most this many detections per image, best first. */
  topK?: number;
  /** Images per vision run (default 1). */
  batchSize?: number;
  /** Cut text queries longer than the model's context instead of refusing them (default false). */
  truncate?: boolean;
  /** OWLv2: keep only detections whose objectness (sigmoid of the objectness logit) is above this. */
  objectnessThreshold?: number;
}

type Scored = { logits: Float32Array; kept?: Int32Array[] };

/**
 * What detect is built on: the detector's calls (the detector passes ones that run inside its
 * detect call); the scoring calls take NMS to run in their plan, postProcessImageGuided its result.
 */
export type DetectorCalls = Pick<OwlVitDetector, 'config' | 'tokenizer' | 'embedImage' | 'postProcess' | 'nms'> & {
  queryText(image: OwlVitImageEmbedding, query: Parameters<OwlVitDetector['queryText']>[1], nms?: PlanNms): Promise<Scored>;
  queryImage(target: OwlVitImageEmbedding, query: OwlVitImageEmbedding, options: Parameters<OwlVitDetector['queryImage']>[2], nms?: PlanNms): Promise<Scored>;
  postProcessImageGuided(...args: [...Parameters<OwlVitDetector['postProcessImageGuided']>, kept?: readonly ArrayLike<number>[]]): Promise<Detections[]>;
};

/** One detection, in the pixels of the original image. */
export interface Detection {
  box: [number, number, number, number];
  score: number;
  /** Index of the query in the image's list (0 for an image query). */
  label: number;
  /** The query text (or, for an image query, the query image's path, else 'image'). */
  query: string;
  /** OWLv2: the probability that the box holds an object at all (sigmoid of its objectness logit). */
  objectness?: number;
}


/**
 * Finds what the queries describe in each image: per image, detections with boxes in its
 * original pixels, best first. Text queries are tokenized with the detector's tokenizer; images
 * of a call are embedded `batchSize` at a time, each once whatever the number of queries.
 */
export async function detect(det: DetectorCalls, images: readonly DetectImage[], queries: DetectQueries, options: DetectOptions = {}): Promise<Detection[][]> {
  const op = 'OwlVitDetector.detect';
  checkInput(Array.isArray(images) && images.length > 0, op, 'expected a non-empty array of images');
  const { threshold = DETECT_THRESHOLD, topK, batchSize = 1 } = options;
  checkInput(Number.isFinite(threshold), op, `threshold must be a finite number, got ${threshold}`);
  checkInput(options.nms === undefined || Number.isFinite(options.nms), op, `nms must be a finite number, got ${options.nms}`);
  checkInput(topK === undefined || (Number.isInteger(topK) && topK >= 1), op, `topK must be a positive integer, got ${topK}`);
  checkInput(Number.isInteger(batchSize) && batchSize >= 1, op, `batchSize must be a positive integer, got ${batchSize}`);
  const { objectnessThreshold } = options;
  const v2 = det.config.modelType === 'owlv2';
  checkInput(objectnessThreshold === undefined || Number.isFinite(objectnessThreshold), op, `objectnessThreshold must be a finite number, got ${objectnessThreshold}`);
  checkInput(objectnessThreshold === undefined || v2, op, 'objectnessThreshold needs an OWLv2 model: OWL-ViT (v1) has no objectness head');
  const size = det.config.vision.imageSize;
  const imageQuery = !Array.isArray(queries) ? (queries as Exclude<DetectQueries, readonly unknown[]>) : undefined;
  let lists: string[][] = [];
  let ids: Int32Array | undefined;
  if (!imageQuery) {
    checkInput((queries as readonly unknown[]).length > 0, op, 'no queries: give at least one string');
    const perImage = (queries as readonly unknown[]).every((q) => Array.isArray(q));
    lists = perImage ? (queries as string[][]).map((l) => [...l]) : images.map(() => [...(queries as string[])]);
    checkInput(lists.length === images.length, op, () => `${lists.length} query lists for ${images.length} images`);
    checkInput(lists.every((l) => l.length > 0 && l.every((q) => typeof q === 'string' && q.trim() !== '')), op, 'every image needs at least one query, and queries must be non-empty strings');
    checkInput(det.tokenizer, op, 'string queries need a tokenizer: the model folder has none of ' + TOKENIZER_FILES.join(', ') + ' (pass { tokenizer } to load)');
    const l = det.config.text.contextLength;
    const tokenizer = det.tokenizer;
    // Encode every distinct string once, before any image is read: a bad query fails early.
    const encoded = new Map<string, Int32Array>();
    for (const q of lists.flat()) if (!encoded.has(q)) encoded.set(q, encodeQuery(op, tokenizer, q, l, options.truncate));
    const maxQ = Math.max(...lists.map((x) => x.length));
    // Images with fewer queries get rows of zeros: padding queries (-1e6) that never win.
    ids = new Int32Array(images.length * maxQ * l);
    lists.forEach((list, img) => list.forEach((q, j) => ids!.set(encoded.get(q)!, (img * maxQ + j) * l)));
  }
  const query = imageQuery ? await detectInputs(op, [imageQuery.image], size, v2) : undefined;
  const queryEmbedding = query ? await det.embedImage(query.data, query.shape, { classEmbedsRaw: true }) : undefined;
  try {
    let queryBox: number[] | undefined;
    if (imageQuery?.box !== undefined) {
      const [h, w] = query!.originalSizes[0]!;
      const b = clipBox(op, 'query box 0', imageQuery.box, w, h);
      // OWLv2 saw the query image padded to a square: boxes are relative to its side.
      const [sx, sy] = v2 ? [Math.max(h, w), Math.max(h, w)] : [w, h];
      queryBox = [b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy];
    }
    const results: Detection[][] = [];
    for (let first = 0; first < images.length; first += batchSize) {
      const chunk = images.slice(first, first + batchSize);
      const pixels = await detectInputs(op, chunk, size, v2);
      const image = await det.embedImage(pixels.data, pixels.shape);
      try {
        let found: Detections[];
        const n = det.config.gridSize ** 2;
        const post = { threshold, targetSizes: pixels.originalSizes, objectnessLogits: image.objectnessLogits };
        if (queryEmbedding) {
          const nmsThreshold = options.nms ?? 0.3;
          // As the post-processing's NMS: normalised corners, boxes scoring > 0 (none at 1 or more).
          const nms = nmsThreshold < 1 ? { boxes: cornerBoxes(image.predBoxes, n, {}), bias: new Float32Array(chunk.length * n), iouThreshold: nmsThreshold, logitThreshold: logitThreshold(0) } : undefined;
          const scored = await det.queryImage(image, queryEmbedding, { queryBox }, nms);
          const candidates = (img: number) => [...bestQueries(scored.logits, img, n, 1).scores.entries()].filter(([, s]) => s > 0).map(([i]) => i);
          const kept = nms && agreedKept(scored.logits, scored.kept, nms, n, candidates);
          found = await det.postProcessImageGuided({ logits: scored.logits, targetPredBoxes: image.predBoxes }, { ...post, nmsThreshold }, kept);
          if (objectnessThreshold !== undefined) found = found.map((d) => objectFilter(d, objectnessThreshold));
        } else {
          const l = det.config.text.contextLength;
          const rows = ids!.length / l / images.length;
          const chunkIds = ids!.subarray(first * rows * l, (first + chunk.length) * rows * l);
          const nms = options.nms === undefined ? undefined : textNms(image, n, v2, post.targetSizes, threshold, options.nms, objectnessThreshold);
          const scored = await det.queryText(image, { inputIds: chunkIds, idsShape: [chunk.length * rows, l] }, nms);
          found = det.postProcess({ logits: scored.logits, predBoxes: image.predBoxes }, post);
          // Boxes that are not objects are dropped before they can suppress others.
          if (objectnessThreshold !== undefined) found = found.map((d) => objectFilter(d, objectnessThreshold));
          if (nms) {
            const kept = agreedKept(scored.logits, scored.kept, nms, n, (img) => found[img]!.indices);
            found = kept ? found.map((d, img) => pick(d, positions(d, kept[img]!))) : await classNms(det, found, nms.iouThreshold);
          }
        }
        found.forEach((d, i) => {
          const name = (label: number) => (imageQuery ? (typeof imageQuery.image === 'string' ? imageQuery.image : 'image') : lists[first + i]![label]!);
          const list = Array.from(d.scores, (score, k): Detection => ({
            box: Array.from(d.boxes.subarray(4 * k, 4 * k + 4)) as Detection['box'],
            score,
            label: d.labels[k]!,
            query: name(d.labels[k]!),
            ...(d.objectness && { objectness: d.objectness[k]! }),
          }));
          list.sort((a, b) => b.score - a.score);
          results.push(topK === undefined ? list : list.slice(0, topK));
        });
      } finally {
        image.dispose();
      }
    }
    return results;
  } finally {
    queryEmbedding?.dispose();
  }
}

/** Preprocessed pixels of detect's images (as OWLv2's processor when `v2`), with their original (h, w). */
async function detectInputs(op: string, images: readonly DetectImage[], size: number, v2: boolean): Promise<{ data: Float32Array; shape: number[]; originalSizes: [number, number][] }> {
  const preprocess = v2 ? preprocessOwlv2Batch : preprocessOwlVitBatch;
  const pre = images.map((img) => typeof img === 'object' && img !== null && 'pixelValues' in img);
  if (pre.every((p) => !p)) return preprocess(images as ImageInput[], { size });
  const data = new Float32Array(images.length * 3 * size * size);
  const originalSizes: [number, number][] = [];
  for (const [i, img] of images.entries()) {
    if (pre[i]) {
      const { pixelValues, originalSize } = img as { pixelValues: Float32Array; originalSize: readonly [number, number] };
      checkInput(pixelValues?.length === 3 * size * size, op, () => `preprocessed pixels must hold 3·${size}·${size} values, got ${pixelValues?.length}`);
      checkFinite(op, `pixelValues of image ${i}`, pixelValues);
      checkInput(Array.isArray(originalSize) && originalSize.length === 2 && originalSize.every((v) => Number.isFinite(v) && v > 0), op, () => `originalSize must be [h, w], got ${JSON.stringify(originalSize)}`);
      data.set(pixelValues, i * 3 * size * size);
      originalSizes.push([originalSize[0], originalSize[1]]);
    } else {
      const one = await preprocess([img as ImageInput], { size });
      data.set(one.data, i * 3 * size * size);
      originalSizes.push(one.originalSizes[0]!);
    }
  }
  return { data, shape: [images.length, 3, size, size], originalSizes };
}

/**
 * Class-aware NMS of text detection inside the scoring plan, as classNms runs it: boxes in the
 * original images' pixels, the objectness filter before it, boxes whose score passes the threshold.
 */
function textNms(image: OwlVitImageEmbedding, n: number, padded: boolean, targetSizes: [number, number][], threshold: number, iouThreshold: number, objectnessThreshold?: number): PlanNms {
  const objectness = image.objectnessLogits;
  const bias = new Float32Array(image.batch * n);
  if (objectness && objectnessThreshold !== undefined) bias.forEach((_, i) => !(sigmoid(objectness[i]!) > objectnessThreshold) && (bias[i] = -Infinity));
  return { boxes: cornerBoxes(image.predBoxes, n, { targetSizes, padded }), bias, iouThreshold, logitThreshold: logitThreshold(threshold) };
}

/** Where the boxes `boxes` (box indices, as d.indices holds them) are in d, ascending. */
function positions(d: Detections, boxes: ArrayLike<number>): number[] {
  const at = new Map(Array.from(d.indices, (box, k) => [box, k]));
  return Array.from(boxes, (box) => at.get(box)!).sort((a, b) => a - b);
}

/** The detections `keep` (indices into d) of one image's detections. */
function pick(d: Detections, keep: readonly number[]): Detections {
  return {
    scores: Float32Array.from(keep, (i) => d.scores[i]!),
    labels: Int32Array.from(keep, (i) => d.labels[i]!),
    boxes: Float32Array.from(keep.flatMap((i) => Array.from(d.boxes.subarray(4 * i, 4 * i + 4)))),
    indices: Int32Array.from(keep, (i) => d.indices[i]!),
    ...(d.objectness && { objectness: Float32Array.from(keep, (i) => d.objectness![i]!) }),
  };
}

/**
 * Class-aware NMS of each image's detections (boxes of different labels never suppress each other),
 * kept in index order. The images share NMS calls while their boxes fit one (NMS_MAX_BOXES), each
 * image's labels offset past the others', so a batch costs one submit, not one per image.
 */
async function classNms(det: DetectorCalls, found: readonly Detections[], iouThreshold: number): Promise<Detections[]> {
  const kept: number[][] = found.map(() => []);
  for (let first = 0; first < found.length; ) {
    let end = first + 1;
    let k = found[first]!.scores.length;
    while (end < found.length && k + found[end]!.scores.length <= NMS_MAX_BOXES) k += found[end++]!.scores.length;
    const group = found.slice(first, end);
    const span = Math.max(1, ...group.map((d) => Math.max(0, ...d.labels) + 1));
    // Box j of the group's concatenation is box j - start[i] of image first + i.
    const start = group.map((_, i) => group.slice(0, i).reduce((n, d) => n + d.scores.length, 0));
    const concat = <T extends Float32Array | Int32Array>(make: new (n: number) => T, part: (d: Detections, i: number) => ArrayLike<number>, width = 1) => {
      const out = new make(k * width);
      group.forEach((d, i) => out.set(part(d, i), start[i]! * width));
      return out;
    };
    const labels = concat(Int32Array, (d, i) => d.labels.map((l) => l + i * span));
    for (const j of await det.nms(concat(Float32Array, (d) => d.boxes, 4), concat(Float32Array, (d) => d.scores), labels, { iouThreshold })) {
      const i = Math.floor(labels[j]! / span);
      kept[first + i]!.push(j - start[i]!);
    }
    first = end;
  }
  return found.map((d, i) => pick(d, kept[i]!.sort((a, b) => a - b)));
}

/** The detections whose objectness is above the threshold. */
function objectFilter(d: Detections, threshold: number): Detections {
  return pick(d, [...d.scores.keys()].filter((k) => d.objectness![k]! > threshold));
}

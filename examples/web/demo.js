// The demo page's logic: load a detector (random demo model, a chosen folder, or a URL) with a
// progress bar, then detect the typed queries in a dropped or picked image and draw the boxes.
// Everything is local: ovgpu.js is the library's browser bundle, built by `npm run web`.
import { OwlVitDetector, TINY_OWLVIT, mapFileSet, openGpu, randomModel, urlFileSet } from './ovgpu.js';

const $ = (id) => document.getElementById(id);
const status = (text) => ($('status').textContent = text);
let gpu;
let detector;
let image;

/** Wraps a FileSet so that every byte read moves the progress bar (total: the sizes of the files opened so far). */
function withProgress(files, onProgress) {
  let read = 0;
  let total = 0;
  return {
    name: files.name,
    path: (f) => files.path(f),
    async open(f) {
      const s = await files.open(f);
      if (!s) return s;
      total += s.size;
      return { ...s, name: s.name, size: s.size, close: () => s.close(), read: async (offset, length) => {
        const bytes = await s.read(offset, length);
        read += bytes.length;
        onProgress(read, total);
        return bytes;
      } };
    },
  };
}

async function modelFiles() {
  const source = document.querySelector('input[name=source]:checked').value;
  if (source === 'random') return mapFileSet(randomModel('owlvit', TINY_OWLVIT, 1));
  if (source === 'folder') {
    const files = $('folder').files;
    if (!files.length) throw new Error('choose a model folder first');
    return mapFileSet(files);
  }
  const url = $('url').value.trim();
  if (!url) throw new Error('type the model folder URL first');
  return urlFileSet(new URL(url.endsWith('/') ? url : `${url}/`, location.href));
}

async function load() {
  $('detect').disabled = true;
  detector?.dispose();
  detector = undefined;
  try {
    const t0 = performance.now();
    const files = withProgress(await modelFiles(), (read, total) => {
      $('progress').value = total ? read / total : 0;
      $('loaded').textContent = `${(read / 1e6).toFixed(1)} MB read`;
    });
    detector = await OwlVitDetector.load(gpu, files);
    $('progress').value = 1;
    const c = detector.config;
    status(`loaded ${c.modelType ?? 'owlvit'} (${c.vision.imageSize} px, patch ${c.vision.patchSize}) in ${(performance.now() - t0).toFixed(0)} ms`);
    $('detect').disabled = !image;
  } catch (err) {
    status(`load failed: ${err.message}`);
  }
}

async function setImage(file) {
  image = await createImageBitmap(file);
  const canvas = $('canvas');
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext('2d').drawImage(image, 0, 0);
  $('detect').disabled = !detector;
}

async function detect() {
  const queries = $('queries').value.split(',').map((q) => q.trim()).filter(Boolean);
  if (!queries.length) return status('type at least one query');
  const t0 = performance.now();
  try {
    const [dets] = await detector.detect([image], queries, { threshold: Number($('threshold').value) });
    const ms = performance.now() - t0;
    const ctx = $('canvas').getContext('2d');
    ctx.drawImage(image, 0, 0);
    ctx.lineWidth = Math.max(2, image.width / 300);
    ctx.font = `${Math.max(12, image.width / 50)}px sans-serif`;
    const colours = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4'];
    for (const d of dets) {
      const [x1, y1, x2, y2] = d.box;
      ctx.strokeStyle = ctx.fillStyle = colours[d.label % colours.length];
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.fillText(`${d.query} ${d.score.toFixed(2)}`, x1 + 3, y1 + parseInt(ctx.font));
    }
    $('results').innerHTML = '<tr><th>query</th><th>score</th><th>box (x1, y1, x2, y2)</th></tr>' +
      dets.map((d) => `<tr><td>${d.query}</td><td>${d.score.toFixed(3)}</td><td>${d.box.map((v) => v.toFixed(0)).join(', ')}</td></tr>`).join('');
    // The first call compiles the pipelines; later calls show the steady-state time.
    status(`detect: ${ms.toFixed(0)} ms (preprocess, vision tower, text tower, heads, post-processing), ${dets.length} detections`);
  } catch (err) {
    status(`detect failed: ${err.message}`);
  }
}

$('load').onclick = load;
$('detect').onclick = detect;
$('image').onchange = (e) => e.target.files[0] && setImage(e.target.files[0]);
const drop = $('drop');
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); if (e.dataTransfer.files[0]) setImage(e.dataTransfer.files[0]); };

try {
  gpu = await openGpu();
  $('adapter').textContent = `${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.device} ${gpu.info.description} (${gpu.profile} profile)`.replace(/\s+/g, ' ');
} catch (err) {
  $('adapter').textContent = err.message;
  $('load').disabled = true;
}

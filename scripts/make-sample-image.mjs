// Draws assets/sample.png (320×240: a red square, a blue circle, a green triangle on a light
// background), the image the README's first command detects in. Run once; the PNG is committed.
import sharp from 'sharp';
import { fileURLToPath } from 'node:url';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240">
  <rect width="320" height="240" fill="#f2efe6"/>
  <rect x="28" y="40" width="90" height="90" fill="#d62828"/>
  <circle cx="215" cy="85" r="50" fill="#1d4ed8"/>
  <polygon points="150,225 210,135 270,225" fill="#2a9d3f"/>
</svg>`;
const out = fileURLToPath(new URL('../assets/sample.png', import.meta.url));
await sharp(Buffer.from(svg)).png({ compressionLevel: 9 }).toFile(out);
console.log(`wrote ${out}`);

// Annotated images for the CLI: the input (EXIF orientation applied, as the detector saw it) with
// an SVG overlay of boxes and "label score" tags, composited by sharp and written as PNG.
import sharp from 'sharp';

interface Annotation {
  box: readonly [number, number, number, number];
  text: string;
  /** Index into the colour cycle (e.g. the query index). */
  color: number;
}

const COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#9a6324', '#000075', '#808000'];

const escapeXml = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The SVG overlay for an image of width × height. */
function overlaySvg(width: number, height: number, annotations: readonly Annotation[]): string {
  const stroke = Math.max(2, Math.round(Math.min(width, height) / 200));
  const font = Math.max(10, Math.round(Math.min(width, height) / 30));
  const parts = annotations.map(({ box, text, color }) => {
    const c = COLORS[color % COLORS.length]!;
    const [x1, y1, x2, y2] = box.map((v) => Math.round(v * 10) / 10) as [number, number, number, number];
    const tagW = Math.ceil(text.length * font * 0.6) + 6;
    const tagY = y1 - font - 4 >= 0 ? y1 - font - 4 : y1;
    return [
      `<rect x="${x1}" y="${y1}" width="${Math.max(0, x2 - x1)}" height="${Math.max(0, y2 - y1)}" fill="none" stroke="${c}" stroke-width="${stroke}"/>`,
      `<rect x="${x1}" y="${tagY}" width="${tagW}" height="${font + 4}" fill="${c}" fill-opacity="0.85"/>`,
      `<text x="${x1 + 3}" y="${tagY + font}" font-family="DejaVu Sans, Arial, sans-serif" font-size="${font}" fill="#fff">${escapeXml(text)}</text>`,
    ].join('');
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${parts.join('')}</svg>`;
}

/** Writes `image` with the annotations drawn on it to `out` (PNG); returns the written size. */
export async function writeAnnotated(image: string | Buffer, out: string, annotations: readonly Annotation[]): Promise<{ width: number; height: number }> {
  const upright = await sharp(image).rotate().toColourspace('srgb').png().toBuffer({ resolveWithObject: true });
  const { width, height } = upright.info;
  await sharp(upright.data)
    .composite([{ input: Buffer.from(overlaySvg(width, height, annotations)), top: 0, left: 0 }])
    .png()
    .toFile(out);
  return { width, height };
}

// Where Chromium is and how to start it for WebGPU headless: shared by the browser tests and the
// browser bench (bench/chromium.ts).

import { existsSync } from 'node:fs';

/** Chromium: $CHROMIUM, else the usual install paths (scripts/setup installs Debian's). */
export function findChromium(): string | undefined {
  return [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p): p is string => !!p && existsSync(p));
}

/** Chromium flags for WebGPU headless (SwiftShader where there is no GPU); root needs --no-sandbox. */
export function chromiumArgs(): string[] {
  return ['--enable-unsafe-webgpu', '--enable-features=Vulkan', ...(process.getuid?.() === 0 ? ['--no-sandbox'] : [])];
}

/** Why a Chromium test skips: the sentence ctx.skip() shows. */
export const NO_CHROMIUM = "no Chromium found (set CHROMIUM, or run scripts/setup to install Debian's chromium)";

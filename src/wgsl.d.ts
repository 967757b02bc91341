// WGSL sources are bundled as strings (esbuild's text loader, a Vite transform in tests).
declare module '*.wgsl' {
  const source: string;
  export default source;
}

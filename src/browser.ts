// The browser entry point (`ovgpu/browser`, or `ovgpu` under the `browser` condition): the same API
// as in Node, with WebGPU from navigator.gpu, model files from URLs, Blobs or bytes, and images
// from createImageBitmap. Built into one self-contained ES module (dist/browser.js).
import './platform/browser.js';

export * from './api.js';

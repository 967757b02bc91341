// The Node entry point: WebGPU through Dawn, model files from disk, images through sharp.
import './platform/node.js';

export * from './api.js';
export { writeRandomModel } from './models/random.js';
export { fileSource, folderFileSet } from './platform/node.js';

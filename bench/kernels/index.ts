// The kernels suite's registry: each kernel adds ONE line here,
//   export { cases as <name> } from './<name>.js';
// re-exporting the `cases` of its bench/kernels/<name>.ts. The suite runs them in alphabetical
// order of these names (a module namespace lists its exports sorted).
export { cases as elementwise } from './elementwise.js';

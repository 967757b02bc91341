// Installs the Node platform (Dawn, disk, sharp) for tests that import src modules directly.
import '../../src/platform/node.js';

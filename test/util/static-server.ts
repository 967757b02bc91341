// A static HTTP server on 127.0.0.1 for tests: serves files by URL path (a map, or folders mounted
// under prefixes), honours single Range requests (206 + Content-Range) and HEAD, and counts the
// requests and body bytes it sent per path, so tests can check how a loader read a file.
import { createReadStream, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.png': 'image/png',
  '.css': 'text/css',
};

export interface ServedStats {
  requests: number;
  bytes: number;
}

export interface StaticServer {
  readonly url: string;
  /** Per URL path: requests answered (HEAD included) and body bytes sent. */
  readonly served: Map<string, ServedStats>;
  close(): Promise<void>;
}

/**
 * `routes`: URL path → file, or URL prefix ending with '/' → folder. `ranges: false` answers every
 * GET with the whole file (200), as a server without range support does.
 */
export async function serveStatic(routes: Record<string, string>, options: { ranges?: boolean } = {}): Promise<StaticServer> {
  const served = new Map<string, ServedStats>();
  const resolve = (path: string): string | undefined => {
    if (routes[path] && !path.endsWith('/')) return routes[path];
    const prefix = Object.keys(routes).filter((p) => p.endsWith('/') && path.startsWith(p)).sort((a, b) => b.length - a.length)[0];
    if (prefix === undefined) return undefined;
    const rest = normalize(decodeURIComponent(path.slice(prefix.length)));
    if (rest.startsWith('..')) return undefined;
    return join(routes[prefix]!, rest);
  };
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const file = resolve(path);
    const size = file ? statSync(file, { throwIfNoEntry: false }) : undefined;
    if (!file || !size?.isFile()) {
      res.writeHead(404).end();
      return;
    }
    const stats = served.get(path) ?? { requests: 0, bytes: 0 };
    served.set(path, stats);
    stats.requests++;
    const headers = { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Accept-Ranges': options.ranges === false ? 'none' : 'bytes', 'Cache-Control': 'no-store' };
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = size.size; // exclusive
    if (range && options.ranges !== false) {
      start = Number(range[1]);
      end = Math.min(Number(range[2]) + 1, size.size);
      if (start >= size.size || start >= end) {
        res.writeHead(416, { 'Content-Range': `bytes */${size.size}` }).end();
        return;
      }
      res.writeHead(206, { ...headers, 'Content-Length': end - start, 'Content-Range': `bytes ${start}-${end - 1}/${size.size}` });
    } else {
      res.writeHead(200, { ...headers, 'Content-Length': size.size });
    }
    if (req.method === 'HEAD' || end === start) {
      res.end();
      return;
    }
    stats.bytes += end - start;
    createReadStream(file, { start, end: end - 1 }).pipe(res);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    served,
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}

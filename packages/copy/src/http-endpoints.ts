// http:// and https:// URLs as copy sources (nbdcopy has none; qemu-img convert and
// nbdkit curl do): @nbd/devices' HttpDevice, Range requests on a keep-alive pool of
// as many connections as the copy would open to an NBD server.
import type { EndpointOptions, Source } from './ends.js';

const HTTP = /^https?:\/\//i;

/** An http(s) URL, as a string or a URL. */
export function isHttpUrl(e: unknown): e is string | URL {
  return (typeof e === 'string' && HTTP.test(e)) || (e instanceof URL && (e.protocol === 'http:' || e.protocol === 'https:'));
}

/** How messages name an http(s) URL: without its query (a pre-signed URL's query is a credential). */
export function describeHttp(e: string | URL): string {
  const u = new URL(e);
  return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
}

/** Reads the image at `url`; loads @nbd/devices only then. */
export async function httpSource(url: string | URL, opts: EndpointOptions): Promise<Source> {
  const { HttpDevice } = await import('@nbd/devices');
  const connections = opts.connections ?? 4;
  const dev = await HttpDevice.open(url, { connections });
  const never = new AbortController().signal;
  return {
    size: dev.size,
    connections,
    read: async (offset, length, signal) => {
      const data = new Uint8Array(length);
      await dev.readAt(data, offset, { fua: false, signal: signal ?? never });
      return { data, release: () => {} };
    },
    close: async () => dev.close(),
  };
}

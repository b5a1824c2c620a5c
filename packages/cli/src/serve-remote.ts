// `nbd serve http URL` (also `curl`, nbdkit's name): HttpDevice with nbdkit curl's
// parameters — header= (repeatable), cookie=, cainfo= (or cafile=), sslverify=,
// timeout= (seconds), followlocation=, user-agent= — and ours: retries=,
// retry-delay= and retry-deadline= (seconds), connections=, redirect-ttl= (seconds).
// With --filter=retry in the stack, retries= and retry-delay= are the filter's.
import { HttpDevice, type HttpDeviceOptions } from '@nbd/devices';
import { UsageError } from './errors.js';
import type { DeviceWord, Params } from './serve-params.js';

/** Seconds (fractions allowed, as nbdkit's timeout=) to milliseconds. */
function seconds(params: Params, key: string): number | undefined {
  const v = params.take(key);
  if (v === undefined) return undefined;
  const s = Number(v);
  if (v.trim() === '' || !Number.isFinite(s) || s < 0) throw new UsageError(params.command, `${key}=${v}: expected seconds`);
  return Math.round(s * 1000);
}

/** The URL without its query (a pre-signed URL's query is a credential) for NBD_OPT_LIST. */
function described(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
}

function optionsOf(params: Params, filters: readonly string[]): HttpDeviceOptions {
  const mine = !filters.includes('retry'); // else retries= and retry-delay= are the retry filter's
  const cainfo = params.take('cainfo');
  const cafile = params.take('cafile');
  if (cainfo !== undefined && cafile !== undefined) throw new UsageError(params.command, 'give cainfo= or cafile=, not both');
  const timeout = seconds(params, 'timeout');
  const follow = params.flag('followlocation');
  const opts: HttpDeviceOptions = {
    headers: params.takeAll('header'),
    cookie: params.take('cookie'),
    caFile: cainfo ?? cafile,
    verify: params.flag('sslverify'),
    // nbdkit: timeout=0 is no timeout; ours always has one, so 0 is the longest.
    timeout: timeout === 0 ? 2 ** 31 - 1 : timeout,
    retries: mine ? params.int('retries', { max: 100 }) : undefined,
    retryDelay: mine ? seconds(params, 'retry-delay') : undefined,
    retryDeadline: seconds(params, 'retry-deadline'),
    connections: params.int('connections', { min: 1, max: 1024 }),
    maxRedirects: follow === false ? 0 : undefined,
    redirectTtl: seconds(params, 'redirect-ttl'),
    userAgent: params.take('user-agent'),
  };
  return Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as HttpDeviceOptions;
}

/** The `http` (and `curl`) device word. */
export const HTTP_WORD: DeviceWord = {
  arity: 1,
  usage: 'http URL [header=… cookie=… cainfo=FILE timeout=SECS retries=N]',
  summary: 'a read-only image on an HTTP(S) server, by Range requests (nbdkit curl)',
  build: async (arg, params, ctx) => {
    const url = arg ?? params.take('url');
    if (url === undefined) throw new UsageError(ctx.command, 'http needs a URL');
    const device = await HttpDevice.open(url, optionsOf(params, ctx.filters ?? []));
    return { device, size: device.size, description: described(device.url) };
  },
};

/** `curl`: nbdkit's name for the same device, so an nbdkit command line works as it is. */
export const CURL_WORD: DeviceWord = {
  ...HTTP_WORD,
  usage: 'curl [url=]URL [header=…]',
  summary: 'the same as http, by nbdkit’s name',
};

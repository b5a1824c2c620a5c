// A little S3 for the tests, against the test run's radosgw: AWS Signature Version 4
// (header-signed requests, and query-signed "pre-signed" URLs as `aws s3 presign`
// makes them), path-style addressing. Enough to make buckets, put objects, and hand
// HttpDevice and nbdkit's curl plugin the same pre-signed URL.
import { createHash, createHmac } from 'node:crypto';

/** Where and as whom: the `s3` part of a CephCluster. */
export interface S3Target {
  s3: { endpoint: string; accessKey: string; secretKey: string; region: string };
}

const hex = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();
/** RFC 3986 encoding, as SigV4 wants it (encodeURIComponent leaves !'()* alone). */
const rfc3986 = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

function stamp(now: Date): { date: string; time: string } {
  const time = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  return { date: time.slice(0, 8), time };
}

function pathOf(bucket: string, key: string): string {
  return `/${rfc3986(bucket)}${key === '' ? '' : `/${key.split('/').map(rfc3986).join('/')}`}`;
}

function canonicalQuery(q: Record<string, string>): string {
  return Object.keys(q)
    .sort()
    .map((k) => `${rfc3986(k)}=${rfc3986(q[k]!)}`)
    .join('&');
}

function signature(t: S3Target, date: string, stringToSign: string): string {
  const key = ['s3', 'aws4_request'].reduce((k, part) => hmac(k, part), hmac(hmac(`AWS4${t.s3.secretKey}`, date), t.s3.region));
  return createHmac('sha256', key).update(stringToSign).digest('hex');
}

function stringToSign(t: S3Target, time: string, date: string, canonical: string): string {
  return ['AWS4-HMAC-SHA256', time, `${date}/${t.s3.region}/s3/aws4_request`, hex(canonical)].join('\n');
}

/** A pre-signed GET URL for `bucket/key`, valid `expires` seconds (SignedHeaders=host). */
export function presignedGet(t: S3Target, bucket: string, key: string, expires = 3600, now = new Date()): string {
  const u = new URL(t.s3.endpoint);
  const { date, time } = stamp(now);
  const path = pathOf(bucket, key);
  const q: Record<string, string> = {
    'X-Amz-Algorithm': 'AWS4-HMAC-SHA256',
    'X-Amz-Credential': `${t.s3.accessKey}/${date}/${t.s3.region}/s3/aws4_request`,
    'X-Amz-Date': time,
    'X-Amz-Expires': String(expires),
    'X-Amz-SignedHeaders': 'host',
  };
  const canonical = ['GET', path, canonicalQuery(q), `host:${u.host}`, '', 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const sig = signature(t, date, stringToSign(t, time, date, canonical));
  return `${u.origin}${path}?${canonicalQuery(q)}&X-Amz-Signature=${sig}`;
}

/** One header-signed request; throws unless the answer is 2xx. */
export async function s3Request(
  t: S3Target,
  method: string,
  bucket: string,
  key: string,
  body: Uint8Array = new Uint8Array(0),
  extra: Record<string, string> = {},
): Promise<Response> {
  const u = new URL(t.s3.endpoint);
  const { date, time } = stamp(new Date());
  const path = pathOf(bucket, key);
  const payload = hex(body);
  const headers: Record<string, string> = { ...extra, host: u.host, 'x-amz-content-sha256': payload, 'x-amz-date': time };
  const names = Object.keys(headers).sort();
  const canonical = [method, path, '', ...names.map((n) => `${n}:${headers[n]}`), '', names.join(';'), payload].join('\n');
  const sig = signature(t, date, stringToSign(t, time, date, canonical));
  const auth = `AWS4-HMAC-SHA256 Credential=${t.s3.accessKey}/${date}/${t.s3.region}/s3/aws4_request, SignedHeaders=${names.join(';')}, Signature=${sig}`;
  const { host: _, ...sent } = headers;
  const r = await fetch(`${u.origin}${path}`, {
    method,
    headers: { ...sent, authorization: auth },
    body: method === 'GET' || method === 'HEAD' ? undefined : (body as Uint8Array<ArrayBuffer>),
  });
  if (!r.ok) throw new Error(`S3 ${method} ${path}: ${r.status} ${await r.text()}`);
  return r;
}

/** Creates `bucket` unless it is there, then puts `body` at `key` (`publicRead`: anyone may GET it without a signature). */
export async function s3Put(
  t: S3Target,
  bucket: string,
  key: string,
  body: Uint8Array,
  opts: { publicRead?: boolean } = {},
): Promise<void> {
  await s3Request(t, 'PUT', bucket, '').catch((e: Error) => {
    if (!/BucketAlreadyExists|BucketAlreadyOwnedByYou/.test(e.message)) throw e;
  });
  await s3Request(t, 'PUT', bucket, key, body, opts.publicRead ? { 'x-amz-acl': 'public-read' } : {});
}

/** The unsigned URL of `bucket/key` (path-style). */
export function objectUrl(t: S3Target, bucket: string, key: string): string {
  return `${new URL(t.s3.endpoint).origin}${pathOf(bucket, key)}`;
}

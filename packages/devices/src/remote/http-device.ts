// nbdkit's curl plugin as a Device: a read-only disk image on an HTTP or HTTPS server,
// read with Range requests over a pool of keep-alive connections (several requests in
// flight, multi-conn). Opening finds the image (HEAD, or GET bytes=0-0 for URLs signed
// for GET only), follows redirects once and keeps their target for a while; every
// reply is checked (http-client.ts) and failed attempts retried (http-retry.ts). A
// reply that cannot be trusted is EIO with a message, never wrong bytes.
import { NbdInvalidArgumentError, raceSignal } from '@nbd/protocol';
import type { Device, DeviceRecipe, IoOptions } from '@nbd/server';
import { changeOf, HttpClient, type Probe, type RangeRequest, shown } from './http-client.js';
import { type HttpDeviceOptions, type HttpSettings, settingsOf } from './http-options.js';
import { HttpAttemptError, withRetries } from './http-retry.js';

/** What a worker thread needs to open the same image without asking the server again. */
export interface HttpRecipeArgs {
  url: string;
  settings: HttpSettings;
  probe: Probe;
  /** When `probe.target` was found (Date.now()). */
  resolvedAt: number;
}

function checkUrl(url: string | URL): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch (e) {
    throw new NbdInvalidArgumentError(`HttpDevice: ${JSON.stringify(String(url))} is not a URL`, { cause: e });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new NbdInvalidArgumentError(`HttpDevice: ${u.protocol} URLs are not served (http: or https:)`);
  if (u.username !== '' || u.password !== '')
    throw new NbdInvalidArgumentError('HttpDevice: put credentials in a header (Authorization), not in the URL');
  return u.href;
}

/** A read-only image over HTTP(S): `await HttpDevice.open('https://host/disk.img', { headers: ['Authorization: Bearer …'] })`. */
export class HttpDevice implements Device {
  readonly size: number;
  readonly readOnly = true;
  /** Nothing to flush: every connection sees the same server. */
  readonly multiConn = true;
  /** The URL as given. */
  readonly url: string;
  private probe: Probe;
  private resolvedAt: number;
  private stale = false;
  private refreshing: Promise<void> | undefined;
  private readonly origin: string;
  /** Where reads go, made once per lookup. */
  private current: RangeRequest;

  private constructor(
    args: HttpRecipeArgs,
    private readonly settings: HttpSettings,
    private readonly client: HttpClient,
  ) {
    this.url = args.url;
    this.probe = args.probe;
    this.resolvedAt = args.resolvedAt;
    this.size = args.probe.size;
    this.origin = new URL(args.url).origin;
    this.current = this.request();
  }

  /** Finds the image at `url` (its size, validators and redirect target), retrying as the options say. */
  static async open(url: string | URL, opts: HttpDeviceOptions = {}): Promise<HttpDevice> {
    const href = checkUrl(url);
    const settings = settingsOf(opts);
    const client = new HttpClient(settings);
    try {
      const probe = await withRetries(
        settings,
        undefined,
        () => client.probe(href, undefined),
        async () => {},
      );
      return new HttpDevice({ url: href, settings, probe, resolvedAt: Date.now() }, settings, client);
    } catch (e) {
      client.close();
      throw e;
    }
  }

  /** The device a worker thread opens from {@link share}'s recipe. */
  static fromRecipe(args: HttpRecipeArgs): HttpDevice {
    return new HttpDevice(args, args.settings, new HttpClient(args.settings));
  }

  /** The URL reads go to now (after redirects). */
  get target(): string {
    return this.probe.target;
  }

  readAt(buf: Uint8Array, offset: number, opts: IoOptions): Promise<void> | undefined {
    if (buf.length === 0) return undefined;
    const signal = opts.signal;
    return withRetries(
      this.settings,
      signal,
      async () => {
        if (this.stale || this.expired()) await raceSignal(this.refresh(), signal, 'an HTTP redirect lookup');
        return this.client.readRange(this.current, buf, offset, signal);
      },
      async () => {
        this.stale = true;
      },
    );
  }

  private request(): RangeRequest {
    const target = new URL(this.probe.target);
    return { target, origin: this.origin, redirected: this.probe.target !== this.url, image: this.probe };
  }

  /** A redirect's target is used for `redirectTtl`, then looked up again. */
  private expired(): boolean {
    return this.probe.target !== this.url && Date.now() - this.resolvedAt > this.settings.redirectTtl;
  }

  /** Looks the URL up again (once for every reader waiting), and checks it is still the same image. */
  private refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      const next = await this.client.probe(this.url, undefined);
      const was = this.probe;
      const changed = changeOf(was, next);
      if (changed !== undefined) throw new HttpAttemptError(`${shown(this.url)}: the file changed (${changed})`, 'fail');
      this.probe = { ...next, etag: was.etag ?? next.etag, lastModified: was.lastModified ?? next.lastModified };
      this.resolvedAt = Date.now();
      this.current = this.request();
      this.stale = false;
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  share(): DeviceRecipe {
    const args: HttpRecipeArgs = { url: this.url, settings: this.settings, probe: this.probe, resolvedAt: this.resolvedAt };
    return { module: new URL('./open-http.js', import.meta.url).href, args };
  }

  close(): void {
    this.client.close();
  }
}

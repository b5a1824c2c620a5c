// `nbd serve`'s command line, read in order: server options anywhere; a device word
// (`memory 1G`, `file disk.img`) gives the current export its device, with its
// arguments and nbdkit-style `key=value` parameters after it, and a device word after
// a complete device starts the next export. `-e NAME` names the current export, or
// starts the next one if the current one is named; `--description` and `--filter`
// belong to the current export.
import { Limits, type NbdUri, NbdUriError, parseNbdUri } from '@nbd/protocol';
import { intOption, parseCommand } from './args.js';
import { UsageError } from './errors.js';
import { REPEATED } from './serve-params.js';
import { parseSize } from './size.js';

/** One export as typed: its device word, the device's arguments and parameters, filters top first (as nbdkit lists them). */
export interface ExportSpec {
  name: string | undefined;
  description: string | undefined;
  device: string | undefined;
  args: string[];
  params: Map<string, string>;
  filters: string[];
}

/** Where to listen. */
export type ListenSpec = { kind: 'tcp'; host: string | undefined; port: number } | { kind: 'unix'; path: string } | { kind: 'private' };

/** TLS as nbdkit's options say it. */
export interface TlsSpec {
  mode: 'off' | 'on' | 'require';
  certificates: string | undefined;
  pskFile: string | undefined;
  verifyPeer: boolean;
}

/** Everything `nbd serve` was asked to do. */
export interface ServeSpec {
  exports: ExportSpec[];
  listen: ListenSpec[];
  tls: TlsSpec | undefined;
  threads: number;
  readOnly: boolean;
  oldstyle: boolean;
  run: string | undefined;
  printUri: boolean;
  verbose: boolean;
}

export const SERVE_OPTIONS = {
  port: { type: 'string', short: 'p' },
  ipaddr: { type: 'string', short: 'i' },
  unix: { type: 'string', short: 'U' },
  listen: { type: 'string', multiple: true },
  export: { type: 'string', short: 'e' },
  'export-name': { type: 'string' },
  description: { type: 'string', short: 'D' },
  filter: { type: 'string', multiple: true },
  format: { type: 'string' },
  backing: { type: 'boolean' },
  'no-backing': { type: 'boolean' },
  'read-only': { type: 'boolean', short: 'r' },
  readonly: { type: 'boolean' },
  threads: { type: 'string', short: 't' },
  tls: { type: 'string' },
  'tls-certificates': { type: 'string' },
  'tls-psk': { type: 'string' },
  'tls-verify-peer': { type: 'boolean' },
  run: { type: 'string' },
  'print-uri': { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  foreground: { type: 'boolean', short: 'f' },
  oldstyle: { type: 'boolean', short: 'o' },
  newstyle: { type: 'boolean', short: 'n' },
} as const;

const SPEC = { name: 'serve', options: SERVE_OPTIONS } as const;

/** How many plain (not key=value) arguments each device word takes at most. */
export type Arity = Record<string, number>;

const PARAM = /^([a-z][a-z0-9_-]*)=(.*)$/is;

/** Splits the token stream into exports. `arity` knows the device words. */
function exportsOf(tokens: ReturnType<typeof parseCommand<typeof SERVE_OPTIONS>>['tokens'], arity: Arity): ExportSpec[] {
  const exports: ExportSpec[] = [];
  const fresh = (): ExportSpec => ({
    name: undefined,
    description: undefined,
    device: undefined,
    args: [],
    params: new Map(),
    filters: [],
  });
  let cur = fresh();
  const start = () => {
    exports.push(cur);
    cur = fresh();
  };
  for (const t of tokens) {
    if (t.kind === 'option') {
      const value = t.value ?? '';
      if (t.name === 'export' || t.name === 'export-name') {
        // Names the current export if it has no name yet, else starts the next one.
        if (cur.name !== undefined) start();
        cur.name = value;
      } else if (t.name === 'description') cur.description = value;
      else if (t.name === 'filter') cur.filters.push(value);
      else if (t.name === 'format') cur.params.set('format', value);
      else if (t.name === 'backing' || t.name === 'no-backing') cur.params.set('backing', t.name === 'backing' ? 'follow' : 'none');
      continue;
    }
    if (t.kind !== 'positional') continue;
    const word = t.value;
    const param = PARAM.exec(word);
    if (cur.device === undefined) {
      if (param) throw new UsageError('serve', `'${word}' comes before any device (give the device first: memory 1G, file PATH, …)`);
      if (arity[word] === undefined) throw new UsageError('serve', `unknown device '${word}' (devices: ${Object.keys(arity).join(', ')})`);
      cur.device = word;
      continue;
    }
    if (param) {
      const key = param[1]!.toLowerCase();
      const before = cur.params.get(key); // a repeated key keeps every value, NUL-joined (Params.takeAll)
      cur.params.set(key, before === undefined ? param[2]! : `${before}${REPEATED}${param[2]!}`);
      continue;
    }
    if (cur.args.length < arity[cur.device]!) {
      cur.args.push(word);
      continue;
    }
    if (arity[word] === undefined)
      throw new UsageError('serve', `unexpected argument '${word}' after ${cur.device} ${cur.args.join(' ')}`.trimEnd());
    start();
    cur.device = word;
  }
  if (cur.device !== undefined || cur.name !== undefined || cur.filters.length > 0 || cur.description !== undefined) exports.push(cur);
  return exports;
}

/** Checks the exports: each has a device; every one but the first a name; names are unique. (Builders check arguments.) */
function checkExports(exports: ExportSpec[]): void {
  if (exports.length === 0) throw new UsageError('serve', 'missing a device to serve (for example: nbd serve memory 1G)');
  const names = new Set<string>();
  exports.forEach((e, i) => {
    if (e.device === undefined) throw new UsageError('serve', `export ${e.name !== undefined ? `"${e.name}"` : i + 1} has no device`);
    if (e.name === undefined && i > 0) throw new UsageError('serve', `export ${i + 1} (${e.device}) needs a name: -e NAME before it`);
    const name = e.name ?? '';
    if (names.has(name)) throw new UsageError('serve', `two exports are named "${name}"`);
    names.add(name);
  });
}

/** The listeners, and the first `--listen` address whose scheme asks for TLS (nbds…). */
function listenOf(v: ReturnType<typeof parseCommand<typeof SERVE_OPTIONS>>['values']): {
  listen: ListenSpec[];
  tlsAsked: string | undefined;
} {
  const listen: ListenSpec[] = [];
  let tlsAsked: string | undefined;
  if (v.unix !== undefined) listen.push(v.unix === '-' ? { kind: 'private' } : { kind: 'unix', path: v.unix });
  if (v.port !== undefined || v.ipaddr !== undefined) {
    listen.push({ kind: 'tcp', host: v.ipaddr, port: intOption('serve', '--port', v.port ?? '10809', { min: 0, max: 65535 })! });
  }
  for (const text of v.listen ?? []) {
    const { spec, tls } = listenUri(text);
    listen.push(spec);
    if (tls) tlsAsked ??= text;
  }
  if (listen.length === 0) listen.push({ kind: 'tcp', host: undefined, port: 10809 });
  return { listen, tlsAsked };
}

/**
 * `--listen nbd[s]://[HOST][:PORT]` or `nbd[s]+unix:///?socket=PATH`, read by the
 * library's URI parser so that no part of it (the scheme's TLS above all) is dropped:
 * what a listener cannot honour (vsock, a user, an export, tls-… parameters) is refused.
 */
function listenUri(text: string): { spec: ListenSpec; tls: boolean } {
  let uri: NbdUri;
  try {
    uri = parseNbdUri(text);
  } catch (e) {
    if (!(e instanceof NbdUriError)) throw e;
    throw new UsageError('serve', `--listen: '${text}' is not an nbd[s]:// or nbd[s]+unix:// URI (${e.message})`, { cause: e });
  }
  const bad = (why: string) => new UsageError('serve', `--listen: '${text}' ${why}`);
  if (uri.transport === 'vsock') throw bad('is a vsock address: Node.js has no vsock sockets');
  if (uri.user !== undefined) throw bad('has a user name: a listener takes its TLS users from --tls-psk');
  if (uri.exportName !== '') throw bad('names an export: name exports with -e NAME');
  const params = Object.keys(uri.params);
  if (params.length > 0) throw bad(`has ${params.join(', ')}: a listener takes only ?socket= (TLS is set with the --tls-* options)`);
  if (uri.transport === 'unix') return { spec: { kind: 'unix', path: uri.socket! }, tls: uri.tls };
  // An empty host (`nbd://:10900`) listens on every address, where a client's URI would mean localhost.
  const anyHost = /^[^:]+:\/\/(?::|$|[/?#])/.test(text);
  const port = uri.port ?? Limits.PORT;
  return { spec: { kind: 'tcp', host: anyHost ? undefined : uri.host, port }, tls: uri.tls };
}

/**
 * The one place that decides `nbd serve`'s TLS mode, from --tls, the credentials and
 * the listeners' schemes: credentials alone mean `require`; an `nbds…` listener
 * needs credentials and `require` (every listener shares the mode), so a user who
 * asked for TLS never gets plaintext.
 */
function tlsOf(v: ReturnType<typeof parseCommand<typeof SERVE_OPTIONS>>['values'], tlsAsked: string | undefined): TlsSpec | undefined {
  const creds = v['tls-certificates'] !== undefined || v['tls-psk'] !== undefined;
  if (v.tls !== undefined && v.tls !== 'off' && v.tls !== 'on' && v.tls !== 'require')
    throw new UsageError('serve', `--tls: expected off, on or require, got '${v.tls}'`);
  if (tlsAsked !== undefined) {
    if (v.tls === 'on' || v.tls === 'off') {
      const why = v.tls === 'on' ? 'lets plaintext clients in' : 'serves plaintext';
      throw new UsageError('serve', `--listen ${tlsAsked} requires TLS, but --tls=${v.tls} ${why} (drop --tls=${v.tls})`);
    }
    if (!creds) throw new UsageError('serve', `--listen ${tlsAsked} requires TLS: give --tls-certificates DIR or --tls-psk FILE`);
  }
  const mode = v.tls ?? (creds ? 'require' : undefined);
  if (mode === undefined) {
    if (v['tls-verify-peer']) throw new UsageError('serve', '--tls-verify-peer needs --tls-certificates');
    return undefined;
  }
  if (mode !== 'off' && !creds) throw new UsageError('serve', `--tls=${mode} needs --tls-certificates DIR or --tls-psk FILE`);
  return { mode, certificates: v['tls-certificates'], pskFile: v['tls-psk'], verifyPeer: v['tls-verify-peer'] === true };
}

/** Reads `nbd serve`'s arguments; `arity` lists the device words it knows. */
export function parseServe(argv: readonly string[], arity: Arity): ServeSpec {
  const { values: v, tokens } = parseCommand(SPEC, argv);
  const exports = exportsOf(tokens, arity);
  checkExports(exports);
  const threads = intOption('serve', '--threads', v.threads, { min: 0, max: 256 }) ?? 0;
  if (v.oldstyle && exports.length > 1) throw new UsageError('serve', '--oldstyle serves one export (oldstyle has no export names)');
  const { listen, tlsAsked } = listenOf(v);
  const tls = tlsOf(v, tlsAsked);
  if (v.oldstyle && tls !== undefined && tls.mode !== 'off')
    throw new UsageError('serve', '--oldstyle has no STARTTLS: drop the --tls options');
  return {
    exports,
    listen,
    tls,
    threads,
    readOnly: v['read-only'] === true || v.readonly === true,
    oldstyle: v.oldstyle === true,
    run: v.run,
    printUri: v['print-uri'] === true,
    verbose: v.verbose === true,
  };
}

/** One device as typed on `nbd attach`'s command line: its word, arguments and key=value parameters. */
export function deviceSpecOf(command: string, words: readonly string[], arity: Arity): ExportSpec {
  const [device, ...rest] = words;
  if (device === undefined || arity[device] === undefined)
    throw new UsageError(command, `unknown device '${device}' (devices: ${Object.keys(arity).join(', ')})`);
  const spec: ExportSpec = { name: '', description: undefined, device, args: [], params: new Map(), filters: [] };
  for (const w of rest) {
    const param = PARAM.exec(w);
    if (param) spec.params.set(param[1]!.toLowerCase(), param[2]!);
    else if (spec.args.length < arity[device]) spec.args.push(w);
    else throw new UsageError(command, `unexpected argument '${w}' after ${device} ${spec.args.join(' ')}`.trimEnd());
  }
  return spec;
}

/** A size argument of a device word (`memory 1G`, `size=1G`). */
export function sizeArg(device: string, text: string | undefined): number {
  if (text === undefined) throw new UsageError('serve', `${device} needs a size (for example: ${device} 1G)`);
  return parseSize('serve', device, text);
}

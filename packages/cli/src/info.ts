// `nbd info URI`: nbdinfo's modes and output — one export (default), every export
// (--list), the size (--size), a capability as the exit code (--can/--is), the
// block-status map (--map [--totals]); text or nbdinfo's JSON. Output is written at
// the end in one piece, so a failure leaves nothing half-printed on stdout.
import { Client, type Connection, type ExportListing, open } from '@nbd/client';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import { ExtentList } from '@nbd/server';
import { parseCommand } from './args.js';
import { ExitCode, UsageError } from './errors.js';
import { capabilities, type ExportFacts, infoJson, infoText } from './info-format.js';
import { imageInfo, isImageFile } from './info-image.js';
import { probeExport, serverFacts } from './info-probe.js';
import { mapJson, mapRuns, mapText, totalsJson, totalsText } from './map-format.js';
import { colourWanted, type Io, painter, tracer, writeAll } from './output.js';
import { isNbdUri, parseUserUri, uriForExport } from './uris.js';

/** `nbd info --help`. */
export const INFO_HELP = `Usage: nbd info [options] URI
       nbd info [--json] FILE

Shows what an NBD server offers, as libnbd's nbdinfo does (same output, same JSON keys).

  nbd info URI                      the export the URI names: size, flags, contexts, content
  nbd info -L|--list URI            every export of the server
  nbd info --size URI               the size in bytes
  nbd info --can FEATURE URI        exit 0 if the export can, 2 if it cannot
  nbd info --is read-only|rotational URI
  nbd info --map[=CONTEXT] URI      the block status map (default base:allocation)
  nbd info --map --totals URI       bytes and percentage per type
  nbd info FILE                     a disk image file: its format (raw or qcow2, from its
                                    header), size, and qcow2's header, as qemu-img info

Options:
  --json                  nbdinfo's JSON (with the default mode, --list and --map)
  --content, --no-content run file(1) over the first 8 KiB (default: on, except with --list)
  --totals                with --map: a summary per type
  --colour, --no-colour   force colour on or off (default: on a terminal unless NO_COLOR is set)
  -h, --help              this help
  -V, --version           the version

FEATURE: connect, read, write, read-only, rotational, tls, structured, cache, df,
fast-zero, flush, fua, multi-conn, trim, zero.

URI: nbd://host[:port]/export, nbd+unix:///export?socket=PATH, nbds://… for TLS
(?tls-certificates=DIR, ?tls-psk-file=FILE, user@ for the PSK identity).
Exit codes: 0 success, 1 failure, 2 usage error (and --can/--is: 2 = no).
nbdinfo equivalent: nbdinfo [--list|--size|--can F|--map[=C] [--totals]] [--json] URI
`;

const SPEC = {
  name: 'info',
  options: {
    list: { type: 'boolean', short: 'L' },
    json: { type: 'boolean' },
    size: { type: 'boolean' },
    can: { type: 'string' },
    is: { type: 'string' },
    map: { type: 'string' },
    totals: { type: 'boolean' },
    total: { type: 'boolean' },
    content: { type: 'boolean' },
    'no-content': { type: 'boolean' },
    colour: { type: 'boolean' },
    color: { type: 'boolean' },
    'no-colour': { type: 'boolean' },
    'no-color': { type: 'boolean' },
  },
  optionalValues: { map: 'base:allocation' },
} as const;

type Mode =
  | { kind: 'show' }
  | { kind: 'list' }
  | { kind: 'size' }
  | { kind: 'can'; feature: string }
  | { kind: 'map'; context: string; totals: boolean };

function modeOf(v: ReturnType<typeof parseCommand<typeof SPEC.options>>['values']): Mode {
  const can = v.can ?? v.is;
  if (v.can !== undefined && v.is !== undefined) throw new UsageError('info', 'give --can or --is, not both');
  const chosen = [v.list, can !== undefined, v.map !== undefined, v.size].filter(Boolean).length;
  if (chosen > 1) throw new UsageError('info', 'you cannot use --list, --size, --can/--is and --map together');
  const totals = v.totals === true || v.total === true;
  if (totals && v.map === undefined) throw new UsageError('info', '--totals only goes with --map');
  if (v.content && v['no-content']) throw new UsageError('info', 'you cannot use --content and --no-content together');
  if (v.list) return { kind: 'list' };
  if (v.size) return { kind: 'size' };
  if (can !== undefined) return { kind: 'can', feature: can };
  if (v.map !== undefined) return { kind: 'map', context: v.map, totals };
  return { kind: 'show' };
}

/** Runs `nbd info`; resolves with the exit code. */
export async function infoCommand(argv: readonly string[], io: Io, signal: AbortSignal): Promise<number> {
  const { values: v, positionals } = parseCommand(SPEC, argv);
  if (positionals.length === 0) throw new UsageError('info', 'missing URI');
  if (positionals.length > 1) throw new UsageError('info', `unexpected argument '${positionals[1]}'`);
  const text = positionals[0]!;
  if (!isNbdUri(text) && (await isImageFile(text))) {
    await writeAll(io.stdout, await imageInfo(text, v.json === true));
    return ExitCode.OK;
  }
  const uri = parseUserUri('info', text);
  const mode = modeOf(v);
  const colourFlag = v.colour || v.color ? true : v['no-colour'] || v['no-color'] ? false : undefined;
  const paint = painter(colourWanted(io.stdout, io.env, colourFlag));
  const trace = tracer(io, 'info');
  const json = v.json === true;
  const content = v.content ?? (v['no-content'] ? false : mode.kind === 'show');
  trace(`connecting to ${text}`);
  let out: string;
  let code: number = ExitCode.OK;
  switch (mode.kind) {
    case 'size': {
      const conn = await open(text, { signal });
      out = `${conn.info.size}\n`;
      await conn.disconnect();
      break;
    }
    case 'can': {
      const feature = featureOf(mode.feature);
      const conn = await open(text, { signal });
      code = feature(conn) ? ExitCode.OK : 2;
      await conn.disconnect();
      out = '';
      break;
    }
    case 'map':
      out = await showMap(text, mode.context, mode.totals, json, paint, signal);
      break;
    case 'list': {
      const r = await showList(text, uri, { json, content, signal, io });
      out = json ? infoJson(r.server, r.exports) : infoText(r.server, r.exports, paint);
      if (!r.ok) code = ExitCode.FAILURE;
      break;
    }
    case 'show': {
      const client = await Client.connect(text, { signal });
      const { facts, conn } = await probeExport(client, client.defaultExport, {
        content,
        uri: uriForExport(uri, client.defaultExport),
        signal,
      });
      const server = serverFacts(client, facts.structured);
      await close(client, conn);
      out = json ? infoJson(server, [facts]) : infoText(server, [facts], paint);
      break;
    }
  }
  await writeAll(io.stdout, out);
  return code;
}

async function close(client: Client, conn: Connection | undefined): Promise<void> {
  if (conn) await conn.disconnect();
  else await client.abort();
}

/**
 * `--list`: every export NBD_OPT_LIST names, each asked about as in the default
 * mode (on a connection of its own when content is probed, since GO ends one).
 * An export that cannot be asked about is reported on stderr; the rest still print.
 */
async function showList(
  text: string,
  uri: ReturnType<typeof parseUserUri>,
  o: { json: boolean; content: boolean; signal: AbortSignal; io: Io },
): Promise<{ server: ReturnType<typeof serverFacts>; exports: ExportFacts[]; ok: boolean }> {
  const client = await Client.connect(text, { signal: o.signal });
  let listed: ExportListing[];
  try {
    listed = await client.list({ signal: o.signal });
  } catch (e) {
    await client.abort().catch(() => {});
    throw e;
  }
  const exports: ExportFacts[] = [];
  let ok = true;
  let structured = client.structuredReplies;
  for (const entry of listed) {
    const c = o.content ? await Client.connect(text, { signal: o.signal }) : client;
    try {
      const { facts, conn } = await probeExport(c, entry.name, {
        content: o.content,
        listed: entry,
        uri: uriForExport(uri, entry.name),
        signal: o.signal,
      });
      exports.push(facts);
      structured = facts.structured;
      if (conn) await conn.disconnect();
      else if (c !== client) await c.abort();
    } catch (e) {
      ok = false;
      o.io.stderr.write(`nbd info: ${(e as Error).message} for export ${JSON.stringify(entry.name)}\n`);
      if (c !== client) await c.abort().catch(() => {});
    }
  }
  const server = serverFacts(client, structured);
  await client.abort().catch(() => {});
  return { server, exports, ok };
}

/** `--map`: block status over the whole export, merged into runs. */
async function showMap(
  text: string,
  context: string,
  totals: boolean,
  json: boolean,
  paint: ReturnType<typeof painter>,
  signal: AbortSignal,
): Promise<string> {
  const conn = await open(text, { metaContexts: [context], signal });
  try {
    if (!conn.metaContexts.has(context))
      throw new NbdInvalidArgumentError(`--map: the server does not support the metadata context "${context}"`);
    const size = conn.info.size;
    // Asked again from where each answer stops; extents are nonzero (the client checks), so each call moves on.
    const list = new ExtentList(0, size);
    while (list.wanted) {
      const at = list.next;
      const extents = (await conn.blockStatus(at, size - at, { contexts: [context], signal })).get(context) ?? [];
      if (extents.length === 0) throw new NbdInvalidArgumentError('--map: the server returned no extents');
      for (const x of extents) if (!list.push(x.length, x.flags)) break;
    }
    const runs = mapRuns(list.extents);
    if (totals) return json ? totalsJson(context, runs, size) : totalsText(context, runs, size, paint);
    return json ? mapJson(context, runs) : mapText(context, runs, paint);
  } finally {
    await conn.disconnect().catch(() => {});
  }
}

/** The test `--can`/`--is` asks for, by nbdinfo's names (several spellings each). */
function featureOf(name: string): (c: Connection) => boolean {
  const key = name.toLowerCase().replace(/[\s_-]/g, '');
  const f = FEATURES[key];
  if (f === undefined) throw new NbdInvalidArgumentError(`unknown --can or --is feature '${name}' (see nbd info --help)`);
  return f;
}

const cap = (key: string) => (c: Connection) => capabilities({ flags: c.info.flags, structured: c.structuredReplies })[key] === true;
const structured = (c: Connection) => c.structuredReplies;

const FEATURES: Record<string, (c: Connection) => boolean> = {
  connect: () => true,
  read: () => true,
  tls: (c) => c.tls !== undefined,
  sr: structured,
  structured,
  structuredreply: structured,
  structuredreplies: structured,
  readonly: cap('is_read_only'),
  write: (c) => !cap('is_read_only')(c),
  rotational: cap('is_rotational'),
  cache: cap('can_cache'),
  df: cap('can_df'),
  fastzero: cap('can_fast_zero'),
  flush: cap('can_flush'),
  fua: cap('can_fua'),
  multiconn: cap('can_multi_conn'),
  trim: cap('can_trim'),
  zero: cap('can_zero'),
};

// What `nbd info` asks a server, as libnbd's nbdinfo asks it: NBD_OPT_INFO while
// negotiating (GO when the server cannot answer INFO), the meta contexts it lists,
// and with content probing GO plus file(1) over the first 8 KiB.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client, Connection, ExportInfo } from '@nbd/client';
import { NbdOptionError, NbdUnsupportedError, OptionReply } from '@nbd/protocol';
import type { ExportFacts, ServerFacts } from './info-format.js';

/** libnbd's protocol names. */
export function protocolName(style: Client['style']): string {
  return style === 'fixed-newstyle' ? 'newstyle-fixed' : style;
}

/** The per-connection facts; `structured` is filled in once an export was asked about. */
export function serverFacts(client: Client, structured: boolean): ServerFacts {
  return { protocol: protocolName(client.style), tls: client.tls !== undefined, structured };
}

/** What to learn about an export besides its flags. */
export interface ProbeOptions {
  /** Run file(1) over the first 8 KiB (needs GO: the client is done afterwards). */
  content: boolean;
  /** The description NBD_OPT_LIST gave, which nbdinfo prefers to the export's own. */
  listed?: { description: string };
  uri?: string;
  signal?: AbortSignal;
}

/** INFO for `name`, or undefined when only GO can tell (an old server, or one refusing INFO with ERR_UNSUP). */
async function infoOf(client: Client, name: string, signal?: AbortSignal): Promise<ExportInfo | undefined> {
  if (client.style !== 'fixed-newstyle') return undefined;
  try {
    return await client.info(name, { signal });
  } catch (e) {
    if (e instanceof NbdOptionError && e.reply === OptionReply.ERR_UNSUP) return undefined;
    throw e;
  }
}

/** The meta contexts the server lists for `name`; undefined when it will not list them. */
async function contextsOf(client: Client, name: string, signal?: AbortSignal): Promise<string[] | undefined> {
  if (client.style !== 'fixed-newstyle') return undefined;
  try {
    const contexts = await client.listMetaContexts(name, [], { signal });
    // Without structured replies no context can be used (libnbd does not list them then).
    return client.structuredReplies ? contexts : undefined;
  } catch (e) {
    if (e instanceof NbdOptionError || e instanceof NbdUnsupportedError) return undefined;
    throw e;
  }
}

/**
 * Everything about one export. Without content probing the client stays negotiating
 * (unless only GO could tell); with it the connection it went to is returned, to close.
 */
export async function probeExport(client: Client, name: string, opts: ProbeOptions): Promise<{ facts: ExportFacts; conn?: Connection }> {
  // Listing meta contexts negotiates structured replies first, as libnbd does right after
  // the greeting: servers advertise some flags (DF) only once they are on.
  const contexts = await contextsOf(client, name, opts.signal);
  let info = await infoOf(client, name, opts.signal);
  let structured = client.structuredReplies;
  let conn: Connection | undefined;
  let content: string | undefined;
  if (info === undefined || opts.content) {
    conn = await client.go(name, { signal: opts.signal });
    info ??= conn.info;
    structured = conn.structuredReplies;
    // As nbdinfo: at most the size the export was described with (nbd-server's INFO says 0).
    if (opts.content) content = await contentOf(conn, Math.min(info.size, conn.info.size), opts.signal);
  }
  const description = opts.listed !== undefined ? opts.listed.description : info.description;
  const facts: ExportFacts = { name: info.name, size: info.size, flags: info.flags, structured };
  if (description) facts.description = description;
  if (content !== undefined) facts.content = content;
  if (opts.uri !== undefined) facts.uri = opts.uri;
  if (contexts !== undefined) facts.contexts = contexts;
  if (info.blockSizes) facts.blockSizes = info.blockSizes;
  return conn ? { facts, conn } : { facts };
}

/** file(1)'s one-line description of the first `size` bytes (8 KiB at most), as nbdinfo's `content`; undefined if file(1) is missing or fails. */
export async function contentOf(conn: Connection, size: number, signal?: AbortSignal): Promise<string | undefined> {
  const head = size > 0 ? await conn.read(0, Math.min(size, 8192), { signal }) : new Uint8Array(0);
  const dir = await mkdtemp(join(tmpdir(), 'nbd-info-'));
  try {
    const file = join(dir, 'head');
    await writeFile(file, head);
    const out = await new Promise<string | undefined>((resolve) => {
      execFile('file', ['-b', file], { timeout: 10_000 }, (err, stdout) => resolve(err ? undefined : stdout));
    });
    const line = out?.split('\n')[0];
    return line === undefined || line === '' ? undefined : line;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

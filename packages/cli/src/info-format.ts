// nbdinfo's output, text and JSON, with its key names and order: what `nbd info`
// learnt about a server and its exports, written so scripts made for nbdinfo read it.

import type { BlockSizes } from '@nbd/client';
import { TransmissionFlag as T } from '@nbd/protocol';
import { humanSize } from './size.js';

/** What the connection says about the server. */
export interface ServerFacts {
  /** libnbd's names: `newstyle-fixed`, `newstyle`, `oldstyle`. */
  protocol: string;
  tls: boolean;
  structured: boolean;
}

/** What `nbd info` learnt about one export. */
export interface ExportFacts {
  name: string;
  description?: string;
  size: number;
  /** file(1)'s description of the first 8 KiB. */
  content?: string;
  uri?: string;
  /** Meta contexts the server lists; undefined when it cannot list them. */
  contexts?: string[];
  /** Raw transmission flags. */
  flags: number;
  /** Structured replies on the connection that learnt the flags (libnbd drops DF without them). */
  structured: boolean;
  blockSizes?: BlockSizes;
}

/** libnbd's view of the flags: DF needs structured replies, fast zero needs write zeroes. */
export function capabilities(e: Pick<ExportFacts, 'flags' | 'structured'>): Record<string, boolean> {
  const has = (bit: number) => (e.flags & bit) !== 0;
  return {
    is_rotational: has(T.ROTATIONAL),
    is_read_only: has(T.READ_ONLY),
    can_cache: has(T.SEND_CACHE),
    can_df: has(T.SEND_DF) && e.structured,
    can_fast_zero: has(T.SEND_FAST_ZERO) && has(T.SEND_WRITE_ZEROES),
    can_flush: has(T.SEND_FLUSH),
    can_fua: has(T.SEND_FUA),
    can_multi_conn: has(T.CAN_MULTI_CONN),
    can_trim: has(T.SEND_TRIM),
    can_zero: has(T.SEND_WRITE_ZEROES),
  };
}

/** One export as nbdinfo's JSON has it (its keys, in its order). */
export function exportJson(e: ExportFacts): Record<string, unknown> {
  const o: Record<string, unknown> = { 'export-name': e.name };
  if (e.description) o.description = e.description;
  if (e.content !== undefined) o.content = e.content;
  if (e.uri !== undefined) o.uri = e.uri;
  if (e.contexts !== undefined) o.contexts = e.contexts;
  Object.assign(o, capabilities(e));
  if (e.blockSizes) {
    o.block_size_minimum = e.blockSizes.min;
    o.block_size_preferred = e.blockSizes.preferred;
    o.block_size_maximum = e.blockSizes.max;
  }
  o['export-size'] = e.size;
  o['export-size-str'] = humanSize(e.size);
  return o;
}

/** The whole JSON document of `nbd info --json` (and `--list --json`). */
export function infoJson(server: ServerFacts, exports: ExportFacts[]): string {
  const doc = { protocol: server.protocol, TLS: server.tls, structured: server.structured, exports: exports.map(exportJson) };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

type Paint = (style: 'bold' | 'gray' | 'green' | 'red', text: string) => string;

/** nbdinfo's text: a protocol line, then a block per export. */
export function infoText(server: ServerFacts, exports: ExportFacts[], paint: Paint): string {
  let out = `${paint(
    'gray',
    `protocol: ${server.protocol} ${server.tls ? 'with' : 'without'} TLS, using ${server.structured ? 'structured' : 'simple'} packets`,
  )}\n`;
  for (const e of exports) out += exportText(e, paint);
  return out;
}

function exportText(e: ExportFacts, paint: Paint): string {
  const head: string[] = [`export=${JSON.stringify(e.name)}:`];
  if (e.description) head.push(`\tdescription: ${e.description}`);
  const human = humanSize(e.size);
  head.push(`\texport-size: ${e.size}${/[A-Z]$/.test(human) ? ` (${human})` : ''}`);
  if (e.content !== undefined) head.push(`\tcontent: ${e.content}`);
  if (e.uri !== undefined) head.push(`\turi: ${e.uri}`);
  const lines = [paint('bold', head.join('\n'))];
  const can = capabilities(e);
  const grey: string[] = [];
  if (e.contexts !== undefined) grey.push('\tcontexts:', ...e.contexts.map((c) => `\t\t${c}`));
  grey.push(`\tis_rotational: ${can.is_rotational}`);
  lines.push(paint('gray', grey.join('\n')));
  lines.push(`\tis_read_only: ${can.is_read_only}`);
  for (const [k, v] of Object.entries(can)) if (k.startsWith('can_')) lines.push(paint(v ? 'green' : 'red', `\t${k}: ${v}`));
  if (e.blockSizes) {
    lines.push(
      `\tblock_size_minimum: ${e.blockSizes.min}`,
      `\tblock_size_preferred: ${e.blockSizes.preferred}`,
      `\tblock_size_maximum: ${e.blockSizes.max}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

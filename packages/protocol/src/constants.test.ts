// Every constant in constants.ts checked against the project's protocol reference
// (docs/protocol.md, itself checked against the NBD project's doc/proto.md),
// plus the name lookups used in logs.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import {
  AllocationState,
  CHUNK_ERROR_BIT,
  ChunkType,
  ClientFlag,
  Command,
  CommandFlag,
  DirtyBitmapState,
  Errno,
  flagNames,
  HandshakeFlag,
  Info,
  Limits,
  Magic,
  MetaContext,
  nameOf,
  OPTION_REPLY_ERROR_BIT,
  Option,
  OptionReply,
  ReplyFlag,
  Size,
  TransmissionFlag,
} from './constants.js';

const REFERENCE = process.env.NBD_PROTOCOL_MD ?? fileURLToPath(new URL('../../../docs/protocol.md', import.meta.url));

interface Table {
  section: string;
  rows: string[][];
}

/** The markdown tables of the reference, each with the `###` section it sits in. */
function tables(md: string): Table[] {
  const out: Table[] = [];
  let section = '';
  let current: Table | undefined;
  for (const line of md.split('\n')) {
    if (line.startsWith('### ')) section = line.slice(4).split(' ')[0]!;
    if (!line.startsWith('|')) {
      current = undefined;
      continue;
    }
    if (current === undefined) {
      current = { section, rows: [] };
      out.push(current);
    }
    if (/^\|[-| ]+\|$/.test(line)) continue; // the |---| separator
    current.rows.push(
      line
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim()),
    );
  }
  return out;
}

/** `123`, `0x7b`, `` `0x7b` (2³¹+1) ``, `0 (\`0x1\`)` → the number. */
function numberIn(cell: string): number {
  const hex = /0x[0-9a-fA-F]+/.exec(cell);
  if (hex) return Number(hex[0]);
  const dec = /^\d+/.exec(cell);
  if (!dec) throw new Error(`no number in ${JSON.stringify(cell)}`);
  return Number(dec[0]);
}

const nameIn = (cell: string) => /`([A-Z_]+)`/.exec(cell)?.[1];

/** name → value for a "| value | `NAME` | …" table (or "| bit | mask | `NAME` |" when `flags`). */
function valueTable(t: Table, flags = false): Record<string, number> {
  const out: Record<string, number> = {};
  for (const row of t.rows.slice(1)) {
    const name = nameIn(row[flags ? 2 : 1]!);
    if (name === undefined) throw new Error(`no name in row ${row.join(' | ')}`);
    out[name] = flags ? 2 ** numberIn(row[0]!) : numberIn(row[0]!);
    if (flags) expect(numberIn(row[1]!), `${name}: bit and mask agree`).toBe(out[name]);
  }
  return out;
}

describe(`constants match ${REFERENCE}`, () => {
  let md: string;
  try {
    md = readFileSync(REFERENCE, 'utf8');
  } catch {
    md = '';
  }
  const all = () => {
    if (md === '') throw new Error(`protocol reference not found at ${REFERENCE} (set NBD_PROTOCOL_MD)`);
    return tables(md);
  };
  const table = (section: string, index: number) => {
    const t = all().filter((x) => x.section === section)[index];
    if (t === undefined) throw new Error(`no table ${index} in §${section}`);
    return t;
  };

  test.each([
    ['Option (§1.3)', Option, '1.3', 0, false],
    ['OptionReply (§1.4)', OptionReply, '1.4', 0, false],
    ['Info (§1.5)', Info, '1.5', 0, false],
    ['TransmissionFlag (§1.6)', TransmissionFlag, '1.6', 0, true],
    ['Command (§1.7)', Command, '1.7', 1, false],
    ['CommandFlag (§1.7)', CommandFlag, '1.7', 2, true],
    ['ChunkType (§1.7)', ChunkType, '1.7', 3, false],
    ['Errno (§1.8)', Errno, '1.8', 0, false],
  ] as const)('%s: same names, same values, none missing', (_name, ours, section, index, flags) => {
    expect({ ...ours }).toEqual(valueTable(table(section, index), flags));
  });

  test('handshake and client flags (§1.2)', () => {
    const rows = table('1.2', 1).rows.slice(1);
    const server: Record<string, number> = {};
    const client: Record<string, number> = {};
    for (const row of rows) {
      const bit = numberIn(row[0]!); // "0 (`0x1`)": the mask
      server[nameIn(row[1]!)!.replace('NBD_FLAG_', '')] = bit;
      client[nameIn(row[2]!)!.replace('NBD_FLAG_C_', '')] = bit;
    }
    expect({ ...HandshakeFlag }).toEqual(server);
    expect({ ...ClientFlag }).toEqual(client);
  });

  test('magic numbers (§1.1)', () => {
    const rows = table('1.1', 0).rows.slice(1);
    const value = (needle: string) => {
      const row = rows.find((r) => r[0]!.includes(needle));
      if (!row) throw new Error(`no magic row for ${needle}`);
      return BigInt(/0x[0-9a-fA-F]+/.exec(row[1]!)![0]);
    };
    const expected: Record<keyof typeof Magic, string> = {
      NBDMAGIC: '`NBDMAGIC`',
      OLDSTYLE: 'cliserv_magic',
      IHAVEOPT: '`IHAVEOPT`',
      OPTION_REPLY: 'option reply magic',
      REQUEST: '`NBD_REQUEST_MAGIC`',
      EXTENDED_REQUEST: '`NBD_EXTENDED_REQUEST_MAGIC`',
      SIMPLE_REPLY: '`NBD_SIMPLE_REPLY_MAGIC`',
      STRUCTURED_REPLY: '`NBD_STRUCTURED_REPLY_MAGIC`',
      EXTENDED_REPLY: '`NBD_EXTENDED_REPLY_MAGIC`',
    };
    expect(Object.keys(Magic).sort()).toEqual(Object.keys(expected).sort());
    for (const [name, needle] of Object.entries(expected)) {
      expect(BigInt(Magic[name as keyof typeof Magic]), name).toBe(value(needle));
    }
  });

  test('meta-context flags and names (§1.9)', () => {
    expect(md).toContain('bit0 `NBD_STATE_HOLE` (1), bit1 `NBD_STATE_ZERO` (2)');
    expect({ ...AllocationState }).toEqual({ HOLE: 1, ZERO: 2 });
    expect(md).toContain('bit0 `NBD_STATE_DIRTY`');
    expect({ ...DirtyBitmapState }).toEqual({ DIRTY: 1 });
    for (const name of Object.values(MetaContext)) expect(md).toContain(`\`${name}`);
  });
});

describe('constants the reference states in prose (transcribed from protocol.md and doc/proto.md)', () => {
  test("the pitfall: BLOCK_STATUS is 5, not nbd.h's 3", () => {
    expect(ChunkType.BLOCK_STATUS).toBe(5);
    expect(ChunkType.BLOCK_STATUS_EXT).toBe(6);
  });

  test('magic numbers spell what they say', () => {
    const ascii = (v: bigint) => new TextDecoder().decode(new Uint8Array(new BigUint64Array([v]).buffer).reverse());
    expect(ascii(Magic.NBDMAGIC)).toBe('NBDMAGIC');
    expect(ascii(Magic.IHAVEOPT)).toBe('IHAVEOPT');
  });

  test('error bits, reply flags, limits and sizes', () => {
    expect(OPTION_REPLY_ERROR_BIT).toBe(2 ** 31);
    for (const [name, v] of Object.entries(OptionReply)) expect((v & OPTION_REPLY_ERROR_BIT) !== 0, name).toBe(name.startsWith('ERR_'));
    expect(CHUNK_ERROR_BIT).toBe(0x8000);
    for (const [name, v] of Object.entries(ChunkType)) expect((v & CHUNK_ERROR_BIT) !== 0, name).toBe(name.startsWith('ERROR'));
    expect({ ...ReplyFlag }).toEqual({ DONE: 1 });
    expect({ ...Limits }).toEqual({
      PORT: 10809,
      MAX_STRING: 4096,
      DEFAULT_MAX_PAYLOAD: 2 ** 25,
      DEFAULT_PREFERRED_BLOCK: 4096,
      MAX_DF_READ: 65536,
      MAX_MIN_BLOCK: 65536,
      MAX_EXTENTS_PER_CHUNK: 2 ** 20,
      NO_PAYLOAD_LIMIT: 0xffffffff,
    });
    expect({ ...Size }).toEqual({
      OLDSTYLE_GREETING: 8 + 8 + 8 + 4 + 124,
      NEWSTYLE_GREETING: 8 + 8 + 2,
      CLIENT_FLAGS: 4,
      OPTION_HEADER: 8 + 4 + 4,
      OPTION_REPLY_HEADER: 8 + 4 + 4 + 4,
      EXPORT_NAME_REPLY: 8 + 2 + 124,
      EXPORT_NAME_REPLY_NO_ZEROES: 8 + 2,
      REQUEST: 4 + 2 + 2 + 8 + 8 + 4,
      EXTENDED_REQUEST: 4 + 2 + 2 + 8 + 8 + 8,
      SIMPLE_REPLY: 4 + 4 + 8,
      STRUCTURED_CHUNK: 4 + 2 + 2 + 8 + 4,
      EXTENDED_CHUNK: 4 + 2 + 2 + 8 + 8 + 8,
    });
  });
});

describe('nameOf and flagNames', () => {
  test('nameOf finds names in every table, numbers and bigints', () => {
    expect(nameOf(Option, 7)).toBe('GO');
    expect(nameOf(OptionReply, 0x80000006)).toBe('ERR_UNKNOWN');
    expect(nameOf(ChunkType, 5)).toBe('BLOCK_STATUS');
    expect(nameOf(Command, 0)).toBe('READ');
    expect(nameOf(Errno, 108)).toBe('ESHUTDOWN');
    expect(nameOf(Info, 3)).toBe('BLOCK_SIZE');
    expect(nameOf(Magic, 0x49484156454f5054n)).toBe('IHAVEOPT');
    expect(nameOf(Magic, 0x67446698)).toBe('SIMPLE_REPLY');
  });

  test('nameOf gives hex for unknown values', () => {
    expect(nameOf(Option, 99)).toBe('0x63');
    expect(nameOf(OptionReply, 0x80000042)).toBe('0x80000042');
    expect(nameOf(Magic, 1n)).toBe('0x1');
  });

  test('every value of every table names itself back', () => {
    for (const t of [
      Option,
      OptionReply,
      Info,
      TransmissionFlag,
      Command,
      CommandFlag,
      ChunkType,
      Errno,
      HandshakeFlag,
      Magic,
      ReplyFlag,
    ]) {
      for (const [k, v] of Object.entries(t)) expect(nameOf(t, v)).toBe(k);
    }
  });

  test('flagNames lists set bits in order, then the unknown rest in hex', () => {
    expect(flagNames(TransmissionFlag, 5)).toEqual(['HAS_FLAGS', 'SEND_FLUSH']);
    expect(flagNames(TransmissionFlag, 0)).toEqual([]);
    expect(flagNames(CommandFlag, 0x21)).toEqual(['FUA', 'PAYLOAD_LEN']);
    expect(flagNames(CommandFlag, 0x8001)).toEqual(['FUA', '0x8000']);
    expect(flagNames(HandshakeFlag, 0xffff)).toEqual(['FIXED_NEWSTYLE', 'NO_ZEROES', '0xfffc']);
    expect(flagNames(TransmissionFlag, 0x1fff)).toEqual(Object.keys(TransmissionFlag));
    expect(flagNames(ClientFlag, 0x80000000)).toEqual(['0x80000000']);
  });
});

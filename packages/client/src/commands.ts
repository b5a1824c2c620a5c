// The transmission commands as a table, beside the option steps' (option-engine.ts):
// for each kind of request, what it needs beyond its range, the reply state it waits
// for, and what its caller gets once that reply is done. `Transmission.submit` is
// generic over the kind, so each result's type flows from here to the Connection
// without a cast.
import { Command } from '@nbd/protocol';
import {
  type Extent,
  type PlainCommand,
  type PlainReply,
  plainReply,
  type ReadReply,
  readReply,
  type StatusReply,
  statusReply,
} from './reply-state.js';

/** Bytes lent by `readLent()`: valid until `release()` (or disposal), then their memory is reused. */
export interface LentBytes {
  /** The bytes read, exactly the length asked for; do not keep or use them after `release()`. */
  readonly data: Uint8Array;
  /** Gives the bytes back; call once done with them (more calls do nothing). */
  release(): void;
  [Symbol.dispose](): void;
}

/** For each kind of request: what it needs beyond offset, length and flags, the reply state it waits for, and what its caller gets. */
export interface CommandTable {
  /** A READ whose bytes are the caller's to keep (a large single chunk stays a view into its arena). */
  read: { args: undefined; reply: ReadReply; result: Uint8Array };
  /** A READ whose bytes are lent from the read arena until released. */
  'read-lent': { args: undefined; reply: ReadReply; result: LentBytes };
  /** A READ into the caller's buffer, at `destPos`. */
  'read-into': { args: { dest: Uint8Array; destPos: number }; reply: ReadReply; result: undefined };
  write: { args: { payload: Uint8Array }; reply: PlainReply; result: undefined };
  flush: { args: undefined; reply: PlainReply; result: undefined };
  trim: { args: undefined; reply: PlainReply; result: undefined };
  zero: { args: undefined; reply: PlainReply; result: undefined };
  cache: { args: undefined; reply: PlainReply; result: undefined };
  /** `payload`: the extended headers' form naming the contexts wanted (then only those are described). */
  'block-status': {
    args: { contextIds: readonly number[]; payload: Uint8Array | undefined };
    reply: StatusReply;
    result: Map<number, Extent[]>;
  };
}
export type CommandKind = keyof CommandTable;
export type CommandArgs<K extends CommandKind> = CommandTable[K]['args'];
export type CommandReply<K extends CommandKind> = CommandTable[K]['reply'];
export type CommandResult<K extends CommandKind> = CommandTable[K]['result'];

/** How a finished READ's bytes reach its caller (the transmission's arenas decide). */
export interface Delivery {
  /** The bytes to keep: a large view stays in its arena, a small one is copied out. */
  keep(st: ReadReply): Uint8Array;
  /** The bytes lent until released. */
  lend(st: ReadReply): LentBytes;
}

interface CommandSpec<K extends CommandKind> {
  /** How error messages name the request: "read", "write", … */
  readonly what: string;
  /** The reply state the request waits for. */
  reply(offset: number, length: number, flags: number, args: CommandArgs<K>): CommandReply<K>;
  /** What goes out after the request header (WRITE's data, BLOCK_STATUS's list of contexts). */
  payload(args: CommandArgs<K>): Uint8Array | undefined;
  /** The caller's result, once the reply is done and fine. */
  result(reply: CommandReply<K>, delivery: Delivery): CommandResult<K>;
}

const none = (): undefined => undefined;

/** A command whose reply brings nothing but success or an error. */
function plain<K extends 'flush' | 'trim' | 'zero' | 'cache'>(what: string, command: PlainCommand): CommandSpec<K> {
  return { what, reply: (offset, length, flags) => plainReply(command, offset, length, flags), payload: none, result: none };
}

export const COMMANDS: { readonly [K in CommandKind]: CommandSpec<K> } = {
  read: {
    what: 'read',
    reply: (offset, length, flags) => readReply(offset, length, flags),
    payload: none,
    result: (reply, delivery) => delivery.keep(reply),
  },
  'read-lent': {
    what: 'read',
    reply: (offset, length, flags) => readReply(offset, length, flags),
    payload: none,
    result: (reply, delivery) => delivery.lend(reply),
  },
  'read-into': {
    what: 'read',
    reply: (offset, length, flags, args) => readReply(offset, length, flags, args.dest, args.destPos),
    payload: none,
    result: none,
  },
  write: {
    what: 'write',
    reply: (offset, length, flags) => plainReply(Command.WRITE, offset, length, flags),
    payload: (args) => args.payload,
    result: none,
  },
  flush: plain('flush', Command.FLUSH),
  trim: plain('trim', Command.TRIM),
  zero: plain('zero', Command.WRITE_ZEROES),
  cache: plain('cache', Command.CACHE),
  'block-status': {
    what: 'block status',
    reply: (offset, length, flags, args) => statusReply(offset, length, flags, args.contextIds),
    payload: (args) => args.payload,
    result: (reply) => reply.extents,
  },
};

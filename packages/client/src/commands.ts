// The transmission commands as a table, beside the option steps' (option-engine.ts):
// for each kind of request, what it needs beyond its range, the reply state it waits
// for, and what its caller gets once that reply is done. `Transmission.submit` is
// generic over the kind, so each result's type flows from here to the Connection
// without a cast.
import { Command } from '@nbd/protocol';
import {
  type Extent,
  type PlainCommand,
  type ReadReply,
  type ReplyState,
  type RequestRange,
  plainReply,
  readReply,
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

/** For each kind of request: what it needs beyond offset, length and flags, and what its caller gets. */
export interface CommandTable {
  /** A READ whose bytes are the caller's to keep (a large single chunk stays a view into its arena). */
  read: { args: undefined; result: Uint8Array };
  /** A READ whose bytes are lent from the read arena until released. */
  'read-lent': { args: undefined; result: LentBytes };
  /** A READ into the caller's buffer, at `destPos`. */
  'read-into': { args: { dest: Uint8Array; destPos: number }; result: undefined };
  write: { args: { payload: Uint8Array }; result: undefined };
  flush: { args: undefined; result: undefined };
  trim: { args: undefined; result: undefined };
  zero: { args: undefined; result: undefined };
  cache: { args: undefined; result: undefined };
  /** `payload`: the extended headers' form naming the contexts wanted (then only those are described). */
  'block-status': { args: { contextIds: readonly number[]; payload: Uint8Array | undefined }; result: Map<number, Extent[]> };
}
export type CommandKind = keyof CommandTable;
export type CommandArgs<K extends CommandKind> = CommandTable[K]['args'];
export type CommandResult<K extends CommandKind> = CommandTable[K]['result'];

/** How a finished READ's bytes reach its caller (the transmission's arenas decide). */
export interface Delivery {
  /** The bytes to keep: a large view stays in its arena, a small one is copied out. */
  keep(st: ReadReply): Uint8Array;
  /** The bytes lent until released. */
  lend(st: ReadReply): LentBytes;
}

/** One request under way: the reply it waits for, the payload it sends, and its caller's result once the reply is done. */
export interface Started<R> {
  readonly reply: ReplyState;
  readonly payload: Uint8Array | undefined;
  result(): R;
}

interface CommandSpec<K extends CommandKind> {
  /** How error messages name the request: "read", "write", … */
  readonly what: string;
  start(range: RequestRange, args: CommandArgs<K>, delivery: Delivery): Started<CommandResult<K>>;
}

const done = (): undefined => undefined;

/** A command whose reply brings nothing but success or an error. */
function plain<K extends 'flush' | 'trim' | 'zero' | 'cache'>(what: string, command: PlainCommand): CommandSpec<K> {
  return { what, start: (range) => ({ reply: plainReply(command, range), payload: undefined, result: done }) };
}

export const COMMANDS: { readonly [K in CommandKind]: CommandSpec<K> } = {
  read: {
    what: 'read',
    start: (range, _args, delivery) => {
      const reply = readReply(range);
      return { reply, payload: undefined, result: () => delivery.keep(reply) };
    },
  },
  'read-lent': {
    what: 'read',
    start: (range, _args, delivery) => {
      const reply = readReply(range);
      return { reply, payload: undefined, result: () => delivery.lend(reply) };
    },
  },
  'read-into': {
    what: 'read',
    start: (range, args) => ({ reply: readReply(range, args.dest, args.destPos), payload: undefined, result: done }),
  },
  write: {
    what: 'write',
    start: (range, args) => ({ reply: plainReply(Command.WRITE, range), payload: args.payload, result: done }),
  },
  flush: plain('flush', Command.FLUSH),
  trim: plain('trim', Command.TRIM),
  zero: plain('zero', Command.WRITE_ZEROES),
  cache: plain('cache', Command.CACHE),
  'block-status': {
    what: 'block status',
    start: (range, args) => {
      const reply = statusReply(range, args.contextIds);
      return { reply, payload: args.payload, result: () => reply.extents };
    },
  },
};

// Helpers of the hostile-input table: our server in a child process (so "the process
// lives" and "memory stays bounded" are about the server alone), raw clients that
// speak through the codecs, and the checks run after every case.
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { open } from '@nbd/client';
import { ClientFlag, encodeClientFlags, encodeOptionRequest, OptionReply, type ServerFrame } from '@nbd/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { RawClient } from '../interop/server-support.js';
import { tempDir } from '../support/peers.js';

export { RawClient };
export const MiB = 1024 * 1024;
const childScript = fileURLToPath(new URL('./server-child.mjs', import.meta.url));

/** Our server in its own process (test/hostile/server-child.mjs, from dist/). */
export class ServerChild {
  private readonly waiting: ((line: string) => void)[] = [];
  private constructor(
    readonly proc: ChildProcess,
    readonly socket: string,
    private readonly cleanup: () => void,
  ) {
    createInterface({ input: proc.stdout! }).on('line', (l) => this.waiting.shift()?.(l));
  }

  static async start(opts: Record<string, unknown> = {}, memMiB = 8): Promise<ServerChild> {
    const { dir, cleanup } = tempDir('nbd-hostile-');
    const socket = join(dir, 's.sock');
    const proc = spawn(process.execPath, ['--expose-gc', childScript, socket, JSON.stringify(opts), String(memMiB)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const child = new ServerChild(proc, socket, cleanup);
    const first = await Promise.race([child.line(), new Promise<string>((r) => proc.once('exit', (c) => r(`exited ${c}`)))]);
    if (first !== 'ready') throw new Error(`server child: ${first}`);
    return child;
  }

  private line(): Promise<string> {
    return new Promise((r) => this.waiting.push(r));
  }

  async ask(cmd: string): Promise<string> {
    const l = this.line();
    this.proc.stdin!.write(`${cmd}\n`);
    return l;
  }

  /** Resident memory in MiB (after a GC when `gc`). */
  async rss(gc = true): Promise<number> {
    if (gc) await this.ask('gc');
    return Number((await this.ask('rss')).split(' ')[1]) / 1024;
  }

  /** Connections the server is serving now. */
  async connections(): Promise<number> {
    return Number((await this.ask('count')).split(' ')[1]);
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async stop(): Promise<void> {
    if (this.alive) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.stdin!.write('stop\n');
      await exited;
    }
    this.cleanup();
  }
}

/** Greeting read, client flags sent: a raw client in the option phase. */
export async function handshake(socket: string, flags: number = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES): Promise<RawClient> {
  const c = await RawClient.connect(socket);
  const g = await c.frame();
  expect(g?.kind).toBe('greeting');
  c.write(encodeClientFlags(flags));
  return c;
}

/** Option replies up to the final one (ACK or an error); null if the server closed. */
export async function replies(c: RawClient): Promise<ServerFrame[] | null> {
  const out: ServerFrame[] = [];
  for (;;) {
    const f = await c.frame();
    if (f === null) return null;
    out.push(f);
    if (f.kind === 'option-reply' && (f.type === OptionReply.ACK || (f.type & 0x80000000) !== 0)) return out;
  }
}

export async function option(c: RawClient, req: Parameters<typeof encodeOptionRequest>[0]): Promise<ServerFrame[] | null> {
  c.write(encodeOptionRequest(req));
  return replies(c);
}

/** The type of the final option reply (>>> 0 so error codes compare as unsigned). */
export function finalType(rs: ServerFrame[] | null): number | 'closed' {
  if (rs === null) return 'closed';
  const last = rs[rs.length - 1] as { type: number };
  return last.type >>> 0;
}

/** Raw bytes of an option: IHAVEOPT | option | length | data (for lengths that lie). */
export function rawOption(option: number, data: Uint8Array, claimedLength = data.length): Uint8Array {
  const b = new Uint8Array(16 + data.length);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, 0x49484156454f5054n);
  v.setUint32(8, option);
  v.setUint32(12, claimedLength);
  b.set(data, 16);
  return b;
}

/** Negotiates into transmission on `name` (structured replies, extended headers as asked). */
export async function transmission(
  socket: string,
  o: { name?: string; structured?: boolean; extended?: boolean; meta?: boolean } = {},
): Promise<RawClient> {
  const c = await handshake(socket);
  if (o.extended) expect(finalType(await option(c, { kind: 'extended-headers' }))).toBe(OptionReply.ACK);
  else if (o.structured) expect(finalType(await option(c, { kind: 'structured-reply' }))).toBe(OptionReply.ACK);
  if (o.meta)
    expect(finalType(await option(c, { kind: 'set-meta-context', name: o.name ?? 'mem', queries: ['base:allocation'] }))).toBe(
      OptionReply.ACK,
    );
  expect(finalType(await option(c, { kind: 'go', name: o.name ?? 'mem', requests: [] }))).toBe(OptionReply.ACK);
  c.decoder.startTransmission(o.extended ?? false);
  return c;
}

/** What a well-behaved client still gets from the server: a write and a verified read back. */
export async function bystanderServed(socket: string, n: number): Promise<void> {
  await using conn = await open({ path: socket }, { exportName: 'mem', handshakeTimeout: 5000 });
  const data = new Uint8Array(4096).fill(n & 0xff);
  const at = 4 * MiB + (n % 64) * 4096;
  await conn.write(data, at);
  expect(await conn.read(at, 4096)).toEqual(data);
}

/** How we answer a hostile input. */
export type Outcome = 'closed' | 'option error' | 'errno reply' | 'accepted' | 'no reply' | 'client error';

/** One row of the hostile-input table. */
export interface HostileCase<Ctx> {
  /** What the peer sends. */
  sends: string;
  /** What the spec requires or allows in answer (quoted or paraphrased from doc/proto.md). */
  spec: string;
  /** What we do. */
  we: Outcome;
  /** Runs the case and checks that we do what `we` (and the test) says. */
  run: (ctx: Ctx) => Promise<void>;
}

/** Counts by outcome, printed after a table has run (the figures of the report). */
export function tally<Ctx>(title: string, cases: readonly HostileCase<Ctx>[]): string {
  const counts = new Map<Outcome, number>();
  for (const c of cases) counts.set(c.we, (counts.get(c.we) ?? 0) + 1);
  return `${title}: ${cases.length} cases — ${[...counts].map(([k, n]) => `${n} ${k}`).join(', ')}`;
}

/**
 * Registers a table of hostile clients against our server (`server()`, started by the
 * file): after each row the server process lives, a well-behaved client is still served
 * (`bystander`, numbered `first + 1`, `first + 2`, …: by default each writes its own block)
 * and the server's RSS stays under 250 MiB. Prints the counts by outcome at the end.
 */
export function serverTable(
  title: string,
  cases: readonly HostileCase<void>[],
  server: () => ServerChild,
  first = 0,
  bystander: (socket: string, n: number) => Promise<void> = bystanderServed,
): void {
  describe(title, () => {
    let n = first;
    for (const c of cases) {
      it(`${c.sends} → ${c.we} (spec: ${c.spec})`, async () => {
        await c.run();
        const srv = server();
        expect(srv.alive).toBe(true);
        await bystander(srv.socket, ++n);
        expect(await srv.rss(false)).toBeLessThan(250);
      });
    }
    afterAll(() => console.log(tally(title, cases)));
  });
}

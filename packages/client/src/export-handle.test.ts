// One export interface for Connection and MultiConnection, recognised by its brand
// (not by shape), and the command table's result types flowing through submit()
// (checked by the type-check of the tests: on a Promise<unknown> they fail).
import { describe, expect, expectTypeOf, test } from 'vitest';
import { RW_FLAGS, scopedFakeServers } from '../test/fake-server.js';
import type { LentBytes } from './commands.js';
import type { Connection } from './connection.js';
import { EXPORT_HANDLE, type ExportHandle, isExportHandle } from './export-handle.js';
import { MultiConnection, open } from './multi.js';
import type { Extent } from './reply-state.js';
import { Transmission } from './transmission.js';

const serve = scopedFakeServers();

describe('ExportHandle', () => {
  test('a Connection and a MultiConnection over it are both ExportHandles; look-alikes without the brand are not', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ flags: RW_FLAGS });
      const r = await p.request();
      p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: new Uint8Array(Number(r.length)).fill(7) });
    });
    const conn = await open(srv.uri);
    const multi = new MultiConnection([conn]);
    const handles: ExportHandle[] = [conn, multi];
    for (const h of handles) {
      expect(isExportHandle(h)).toBe(true);
      expect(h.connectionCount).toBe(1);
      expect(h.info.size).toBe(conn.info.size);
    }
    expect([...(await multi.read(0, 4))]).toEqual([7, 7, 7, 7]); // on its one connection
    // The shape copy() used to test for, without the brand; and the brand as another copy of this package sets it.
    const lookAlike = { info: conn.info, readLent: () => {}, blockStatus: () => {} };
    expect(isExportHandle(lookAlike)).toBe(false);
    expect(isExportHandle({ ...lookAlike, [Symbol.for('@nbd/client.ExportHandle')]: true })).toBe(true);
    expect(isExportHandle(null)).toBe(false);
    expect(isExportHandle('nbd://x')).toBe(false);
    expect(EXPORT_HANDLE).toBe(Symbol.for('@nbd/client.ExportHandle'));
    await multi.disconnect();
  });

  test("each command kind's result type flows from the command table through submit() to the Connection", () => {
    const submit = Transmission.prototype.submit;
    expectTypeOf(submit<'read'>).returns.resolves.toEqualTypeOf<Uint8Array>();
    expectTypeOf(submit<'read-lent'>).returns.resolves.toEqualTypeOf<LentBytes>();
    expectTypeOf(submit<'read-into'>).returns.resolves.toEqualTypeOf<undefined>();
    expectTypeOf(submit<'block-status'>).returns.resolves.toEqualTypeOf<Map<number, Extent[]>>();
    expectTypeOf(submit<'write'>)
      .parameter(4)
      .toEqualTypeOf<{ payload: Uint8Array }>();
    expectTypeOf(submit<'read-into'>)
      .parameter(4)
      .toEqualTypeOf<{ dest: Uint8Array; destPos: number }>();
    expectTypeOf<Connection>().toExtend<ExportHandle>();
    expectTypeOf<MultiConnection>().toExtend<ExportHandle>();
  });
});

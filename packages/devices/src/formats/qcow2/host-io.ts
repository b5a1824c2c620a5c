// The image file under a qcow2 device: any Device (a FileDevice, an HTTP or S3
// export...). Reads past the end of the file read zeroes (as qemu's file driver);
// the file grows only when the device below can grow (a regular file), else writing
// past its size is ENOSPC. Metadata I/O runs under the device's own signal, so a
// client that goes away never leaves a table half written. Data I/O is counted, so
// a freed cluster is handed out again only after every request that could still
// touch it has finished.
import { Errno, NbdErrnoError } from '@nbd/protocol';
import type { Device, IoOptions } from '@nbd/server';

export class HostIo {
  /** Bytes in the file (grows as clusters are written past the end). */
  length: number;
  private readonly io: IoOptions;
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(
    readonly device: Device,
    /** The file can grow past the device's size (a regular file). */
    readonly growable: boolean,
    signal: AbortSignal,
  ) {
    this.length = device.size ?? 0;
    this.io = { fua: false, signal };
  }

  /** True if the device below can write. */
  get writable(): boolean {
    return this.device.writeAt !== undefined && this.device.readOnly !== true;
  }

  /** Fills `buf` from `offset`; bytes past the end of the file read as zeroes. */
  async read(buf: Uint8Array, offset: number): Promise<void> {
    const inFile = Math.max(0, Math.min(buf.length, this.length - offset));
    if (inFile < buf.length) buf.fill(0, inFile);
    if (inFile > 0) await this.device.readAt(inFile === buf.length ? buf : buf.subarray(0, inFile), offset, this.io);
  }

  /** Writes `buf` at `offset`, growing the file if allowed. */
  async write(buf: Uint8Array, offset: number): Promise<void> {
    const end = offset + buf.length;
    if (end > this.length && !this.growable && end > (this.device.size ?? 0))
      throw new NbdErrnoError(Errno.ENOSPC, `the image file cannot grow past ${this.device.size} bytes`);
    await this.device.writeAt!(buf, offset, this.io);
    if (end > this.length) this.length = end;
  }

  /** Reads guest data: counted until it finishes (see {@link settled}). */
  readData(buf: Uint8Array, offset: number): Promise<void> {
    return this.track(this.read(buf, offset));
  }

  /** Writes guest data: counted until it finishes. */
  writeData(buf: Uint8Array, offset: number): Promise<void> {
    return this.track(this.write(buf, offset));
  }

  /** Resolves once every data read and write started before this call has finished. */
  async settled(): Promise<void> {
    if (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  async sync(): Promise<void> {
    await this.device.sync?.(this.io);
  }

  /** Gives a freed range back to the file system, if the device below can (trim is advisory). */
  async discard(offset: number, length: number): Promise<void> {
    const end = Math.min(offset + length, this.length);
    if (this.device.trim === undefined || end <= offset) return;
    try {
      await this.device.trim(offset, end - offset, this.io);
    } catch {
      // A file system that cannot punch holes keeps the bytes: only space is lost.
    }
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }
}

// Files and block devices as copy endpoints, on @nbd/devices' FileDevice: its map
// from SEEK_DATA/SEEK_HOLE, its block-device size (BLKGETSIZE64), its hole punching
// and BLKZEROOUT. A path is opened here (and closed); a FileHandle is the caller's.
// What is neither a regular file nor a block device (a FIFO, /dev/null, a pipe on
// standard output) is copied as a stream, in order, as nbdcopy does.
import { constants, fstatSync } from 'node:fs';
import { type FileHandle, open as openFile } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import type { FileDevice } from '@nbd/devices';
import { AllocationState, Errno, NbdErrnoError } from '@nbd/protocol';
import type { EndpointOptions, Sink, Source } from './ends.js';
import { stdinSource, stdoutSink } from './stream-endpoints.js';

/** FileDevice's calls take a signal; the copy checks its own between requests. */
const IO = { fua: false, signal: new AbortController().signal };

/** Loaded on first use: a copy between NBD exports does not load @nbd/devices. */
async function deviceOf(fh: FileHandle, readOnly: boolean, owned: boolean): Promise<FileDevice> {
  const { FileDevice } = await import('@nbd/devices');
  try {
    return await FileDevice.fromHandle(fh, { readOnly, owned });
  } catch (e) {
    if (owned) await fh.close();
    throw e;
  }
}

/** A regular file or a block device (else a stream: FIFO, character device, socket). */
async function seekable(fh: FileHandle): Promise<boolean> {
  const st = await fh.stat();
  return st.isFile() || st.isBlockDevice();
}

/** Reads a file or block device (opened from `path`, or the caller's `handle`). */
export async function fileSource(path: string | undefined, handle: FileHandle | undefined, opts: EndpointOptions): Promise<Source> {
  const fh = handle ?? (await openFile(path!, 'r'));
  if (!(await seekable(fh))) {
    // Not fh.createReadStream(): a stream holds the handle, and close() would wait for it.
    return { ...stdinSource(Readable.from(chunksOf(fh))), close: async () => (handle === undefined ? fh.close() : undefined) };
  }
  const dev = await deviceOf(fh, true, handle === undefined);
  const map = dev.extents;
  return {
    size: dev.size,
    connections: 1,
    read: async (off, len) => {
      const data = Buffer.allocUnsafe(len);
      await dev.readAt(data, off, IO); // past the end (the file shrank under us) reads as zeroes
      return { data, release: noop };
    },
    extents:
      map !== undefined && opts.sparse !== false && opts.extents !== false
        ? async (off, len, signal) => {
            const found = await map(off, len, { ...IO, signal: signal ?? IO.signal, reqOne: false });
            return found.map((x) => ({ length: x.length, zero: (x.flags & AllocationState.ZERO) !== 0 }));
          }
        : undefined,
    close: () => dev.close(),
  };
}

/**
 * Writes a file or block device (a path created or truncated here, or the caller's
 * `handle`). `joining`: a worker thread's second handle on it (opened without
 * truncating, only synced at the end). `opts.truncate: false` keeps what the file
 * holds (copying a file onto itself).
 */
export async function fileSink(
  path: string | undefined,
  handle: FileHandle | undefined,
  opts: EndpointOptions,
  joining: boolean,
): Promise<Sink> {
  const truncate = !joining && opts.truncate !== false;
  const flags = constants.O_WRONLY | (truncate ? constants.O_CREAT | constants.O_TRUNC : 0);
  const fh = handle ?? (await openFile(path!, flags, 0o666));
  if (!(await seekable(fh))) return streamSink(fh, handle === undefined);
  return deviceSink(await deviceOf(fh, false, handle === undefined), fh, opts, joining);
}

/**
 * Standard output as a file when it is one: `nbd copy URI - > disk.img` leaves holes
 * as a named file would. Only an empty regular file (a fresh `>` or `>>`) or a block
 * device: anything else (a pipe, a file with something in it already) takes the bytes
 * in order. Opened again through /proc/self/fd/1 so that an O_APPEND descriptor
 * does not turn positional writes into appends.
 */
export async function stdoutFileSink(opts: EndpointOptions): Promise<Sink | undefined> {
  if (process.platform !== 'linux') return undefined;
  let st: ReturnType<typeof fstatSync>;
  try {
    st = fstatSync(1);
  } catch {
    return undefined;
  }
  if (!(st.isBlockDevice() || (st.isFile() && st.size === 0))) return undefined;
  let fh: FileHandle;
  try {
    fh = await openFile('/proc/self/fd/1', constants.O_WRONLY);
  } catch {
    return undefined; // no /proc, or no permission to open it again: written as a stream
  }
  const sink = deviceSink(await deviceOf(fh, false, true), fh, opts, false);
  return {
    ...sink,
    finish: async (size, flush) => {
      await sink.finish(size, flush);
      // Our writes went through another descriptor: move standard output's offset past
      // them, so that what the shell writes next (`{ nbd copy URI -; echo; } > f`) follows.
      const { libcFunction } = await import('@nbd/node/internal');
      libcFunction('int64_t lseek(int fd, int64_t offset, int whence)')(1, size, 0 /* SEEK_SET */);
    },
  };
}

function deviceSink(dev: FileDevice, fh: FileHandle, opts: EndpointOptions, joining: boolean): Sink {
  const file = dev.kind === 'file';
  // A regular file that is empty reads as zeroes: holes are left by not writing there,
  // unless zeroes must be allocated.
  const knownZero = opts.destinationIsZero ?? (file && dev.size === 0 && !joining && opts.allocated !== true);
  const zeroOpts = { ...IO, noHole: opts.allocated === true, fast: false };
  return {
    // A block device has a size the source must fit in; a file grows.
    size: file ? undefined : dev.size,
    connections: 1,
    knownZero,
    sequential: false,
    write: async (buf, off) => dev.writeAt!(buf, off, IO),
    // Holes punched in files (ZERO_RANGE when allocated), BLKZEROOUT on block devices;
    // written as zero bytes where FileDevice cannot zero (off Linux).
    zero: async (off, len) => {
      if (dev.zero !== undefined) return dev.zero(off, len, zeroOpts);
      const zeroes = new Uint8Array(Math.min(len, 1 << 20));
      for (let pos = 0; pos < len; pos += zeroes.length)
        await dev.writeAt!(zeroes.subarray(0, Math.min(zeroes.length, len - pos)), off + pos, IO);
    },
    finish: async (size, flush) => {
      if (file && !joining) await fh.truncate(size);
      if (flush) await dev.sync();
    },
    close: () => dev.close(),
  };
}

/** What `fh` reads from where it is to its end (a FIFO, a character device). */
async function* chunksOf(fh: FileHandle): AsyncGenerator<Uint8Array> {
  for (;;) {
    const buf = Buffer.allocUnsafe(1 << 20);
    const { bytesRead } = await fh.read(buf, 0, buf.length, null);
    if (bytesRead === 0) return;
    yield buf.subarray(0, bytesRead);
  }
}

/** A destination that is not seekable (a FIFO, /dev/null): the bytes in order, zeroes included. */
function streamSink(fh: FileHandle, owned: boolean): Sink {
  // Not fh.createWriteStream(): a stream holds the handle, and close() would wait for it.
  const out = new Writable({
    write: (chunk: Buffer, _encoding, done) => {
      writeAll(fh, chunk).then(() => done(), done);
    },
  });
  out.on('error', () => {}); // each write's callback rejects the copy with it
  const s = stdoutSink(out);
  return { ...s, close: async () => (owned ? fh.close() : undefined) };
}

/** Writes all of `buf` where `fh` is (no offset: a FIFO cannot seek). */
async function writeAll(fh: FileHandle, buf: Uint8Array): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, null);
    if (bytesWritten <= 0) throw new NbdErrnoError(Errno.EIO, 'a write made no progress');
    done += bytesWritten;
  }
}

function noop(): void {}

// `nbd attach` (an export, or a device served by this process, as /dev/nbdN),
// `nbd detach` and `nbd devices`: nbd-client's jobs over @nbd/linux.
import { existsSync, readFileSync } from 'node:fs';
import { Client, type Connection } from '@nbd/client';
import { configure, disconnect, listDevices, loopback, NbdNetlink, NbdSystemError, status, supervise } from '@nbd/linux';
import { NbdInvalidArgumentError, TransmissionFlag, tieToSignal } from '@nbd/protocol';
import { expectPositionals, intOption, parseCommand } from './args.js';
import { ExitCode, UsageError } from './errors.js';
import { type Io, tracer, writeAll } from './output.js';
import { arityOf, buildExport, DEVICE_WORDS } from './serve-devices.js';
import { deviceSpecOf } from './serve-spec.js';
import { isNbdUri, parseUserUri } from './uris.js';

/** `nbd attach --help`. */
export const ATTACH_HELP = `Usage: nbd attach [options] URI
       nbd attach [options] DEVICE [ARGS] [key=value…]

Attaches an NBD export, or a device this process serves, to the kernel as /dev/nbdN
(needs root and the nbd module: modprobe nbd), and prints the device's path.

  nbd attach nbd://server/disk             a remote export (the kernel holds the sockets)
  nbd attach memory 1G                     RAM served by this process
  nbd attach file disk.img                 a file served by this process
  nbd attach --filter cow file disk.img    its writes kept in memory, the file untouched

A device served by this process (${Object.keys(DEVICE_WORDS).join(', ')}) needs the
process to stay alive: nbd attach then runs in the foreground until the device is
detached (nbd detach) or it gets Ctrl-C/SIGTERM, which flushes and detaches it. So
does an export attached with --persist, over TLS, or through ioctls (--ioctl, or no
netlink). Otherwise nbd attach exits once the kernel holds the connections.

Options:
  -d, --device DEV         /dev/nbdN (or N) to use (default: a free one)
  -C, --connections N      connections (needs an export or device with multi-conn)
      --netlink            configure through generic netlink (default when available)
      --ioctl              configure through ioctls (stays in the foreground)
      --timeout SECONDS    request timeout of the kernel (default: the kernel's, 30)
      --dead-timeout SECONDS  netlink: how long I/O waits while every link is dead
      --persist            reconnect when the server goes away (netlink; foreground)
  -b, --block-size N       logical block size: 512, 1024, 2048 or 4096
  -r, --read-only          the kernel sees the device read-only
      --filter NAME        a filter over a device served here, as in nbd serve (repeatable)
      --json               print {"device", "index", "size"} instead of the path
  -h, --help               this help

Exit codes: 0 success, 1 failure, 2 usage error.
nbd-client equivalent: nbd-client HOST PORT /dev/nbdN -N NAME [-C N] [-t S] [-persist] [-nonetlink]
`;

/** `nbd detach --help`. */
export const DETACH_HELP = `Usage: nbd detach DEV

Detaches /dev/nbdN (or N), whoever attached it (needs root). Fails if it is not attached.
nbd-client equivalent: nbd-client -d /dev/nbdN
`;

/** `nbd devices --help`. */
export const DEVICES_HELP = `Usage: nbd devices [--json] [--all]

Lists the kernel's /dev/nbdN: attached ones (device, size, pid, backend), or every one
with --all. --json prints nbd's JSON: [{ "device", "index", "connected", "size",
"read-only", "pid", "backend" }]. Needs the nbd module (modprobe nbd).
nbd-client equivalent: nbd-client -c /dev/nbdN (one device at a time)
`;

const ATTACH_SPEC = {
  name: 'attach',
  options: {
    device: { type: 'string', short: 'd' },
    connections: { type: 'string', short: 'C' },
    netlink: { type: 'boolean' },
    ioctl: { type: 'boolean' },
    timeout: { type: 'string' },
    'dead-timeout': { type: 'string' },
    persist: { type: 'boolean' },
    'block-size': { type: 'string', short: 'b' },
    'read-only': { type: 'boolean', short: 'r' },
    json: { type: 'boolean' },
    filter: { type: 'string', multiple: true },
  },
} as const;

/** `/dev/nbd3`, `nbd3` or `3` → 3; the device must exist. */
export function deviceIndex(command: string, text: string): number {
  const m = /^(?:\/dev\/)?(?:nbd)?(\d+)$/.exec(text.trim());
  if (!m) throw new UsageError(command, `'${text}' is not an NBD device (expected /dev/nbdN or N)`);
  const index = Number(m[1]);
  const all = listDevices();
  if (all.length === 0) throw new NbdInvalidArgumentError(`/dev/nbd${index}: there are no NBD devices (modprobe nbd)`);
  if (!all.includes(index))
    throw new NbdInvalidArgumentError(
      `/dev/nbd${index} does not exist (there are /dev/nbd${all[0]} to /dev/nbd${all.at(-1)}; modprobe nbd nbds_max=N for more)`,
    );
  return index;
}

/** The library's "no nbd netlink family" (ENOENT): the module is not loaded, or the kernel predates netlink NBD. */
const isNoNetlink = (e: unknown) => e instanceof NbdSystemError && e.errnoName === 'ENOENT';

/** Netlink or ioctls: as asked, else netlink when the kernel has the family. */
async function modeOf(v: { netlink?: boolean; ioctl?: boolean }): Promise<'netlink' | 'ioctl'> {
  if (v.netlink && v.ioctl) throw new UsageError('attach', 'give --netlink or --ioctl, not both');
  if (v.ioctl) return 'ioctl';
  const nl = await NbdNetlink.open().catch((e: unknown) => {
    // Said with this command's flag: the library's message names its own option (mode: 'ioctl').
    if (v.netlink && isNoNetlink(e))
      throw new NbdSystemError(
        'the kernel has no nbd netlink family: load the nbd module (modprobe nbd), or use --ioctl on a kernel without netlink NBD',
        'ENOENT',
        2,
        { cause: e },
      );
    if (v.netlink) throw e;
    return undefined;
  });
  nl?.close();
  return nl ? 'netlink' : 'ioctl';
}

/** Runs `nbd attach`. */
export async function attachCommand(argv: readonly string[], io: Io, signal: AbortSignal): Promise<number> {
  const { values: v, positionals } = parseCommand(ATTACH_SPEC, argv);
  if (positionals.length === 0) throw new UsageError('attach', 'missing what to attach: a URI, or a device such as memory 1G');
  const o = {
    index: v.device !== undefined ? deviceIndex('attach', v.device) : undefined,
    connections: intOption('attach', '--connections', v.connections, { min: 1, max: 64 }) ?? 1,
    timeout: intOption('attach', '--timeout', v.timeout, { min: 1 }),
    deadTimeout: intOption('attach', '--dead-timeout', v['dead-timeout'], { min: 1 }),
    blockSize: intOption('attach', '--block-size', v['block-size'], { min: 512, max: 4096 }),
    readOnly: v['read-only'] === true,
  };
  const mode = await modeOf(v);
  const first = positionals[0]!;
  if (isNbdUri(first)) {
    expectPositionals('attach', positionals, ['URI']);
    parseUserUri('attach', first);
    if (v.filter !== undefined) throw new UsageError('attach', '--filter is for devices served here (memory, file, …), not URIs');
    return attachRemote(first, { ...o, mode, persist: v.persist === true, json: v.json === true }, io, signal);
  }
  if (v.persist) throw new UsageError('attach', '--persist is for URIs (a device served here has no server to lose)');
  if (v['dead-timeout'] !== undefined) throw new UsageError('attach', '--dead-timeout is for URIs');
  if (DEVICE_WORDS[first] === undefined) {
    throw new UsageError('attach', `'${first}' is neither an NBD URI nor a device (${Object.keys(DEVICE_WORDS).join(', ')})`);
  }
  const spec = { ...deviceSpecOf('attach', positionals, arityOf()), filters: v.filter ?? [] };
  const reports: (() => void)[] = [];
  const built = await buildExport(spec, { threads: 0, readOnly: o.readOnly, command: 'attach', atExit: (r) => void reports.push(r) });
  const lb = await loopback(built.device, built.size, {
    connections: o.connections,
    readOnly: o.readOnly,
    mode,
    signal,
    ...(o.index !== undefined ? { index: o.index } : {}),
    ...(o.blockSize !== undefined ? { blockSize: o.blockSize } : {}),
    ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
  }).catch(async (e: unknown) => {
    await built.device.close?.(); // the kernel refused: the device (a file) is ours to close
    throw e;
  });
  await announce(io, v.json === true, lb.index, built.size);
  io.stderr.write(`nbd attach: serving ${lb.path} from this process; Ctrl-C or 'nbd detach ${lb.path}' detaches it\n`);
  await lb.closed;
  await built.device.close?.();
  for (const report of reports) report();
  return ExitCode.OK;
}

async function announce(io: Io, json: boolean, index: number, size: number): Promise<void> {
  await writeAll(io.stdout, json ? `${JSON.stringify({ device: `/dev/nbd${index}`, index, size })}\n` : `/dev/nbd${index}\n`);
}

interface RemoteOptions {
  index: number | undefined;
  connections: number;
  timeout: number | undefined;
  deadTimeout: number | undefined;
  blockSize: number | undefined;
  readOnly: boolean;
  mode: 'netlink' | 'ioctl';
  persist: boolean;
  json: boolean;
}

/** Connects `n` times to `uri` and negotiates simple replies, as the kernel speaks. */
async function connectAll(uri: string, n: number, signal: AbortSignal): Promise<Connection[]> {
  const conns: Connection[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const client = await Client.connect(uri, { signal });
      conns.push(await client.go(client.defaultExport, { structuredReplies: false, signal }));
    }
  } catch (e) {
    await Promise.allSettled(conns.map((c) => c.disconnect()));
    throw e;
  }
  return conns;
}

/** What the kernel gets: the detached sockets, read-only if asked. */
function handOver(conns: Connection[], readOnly: boolean) {
  return conns.map((c) => {
    const { socket, info } = c.detach();
    return {
      socket,
      size: info.size,
      flags: readOnly ? info.flags | TransmissionFlag.READ_ONLY : info.flags,
      blockSize: info.blockSizes?.min,
    };
  });
}

async function attachRemote(uri: string, o: RemoteOptions, io: Io, signal: AbortSignal): Promise<number> {
  const trace = tracer(io, 'attach');
  if (o.persist && o.mode !== 'netlink')
    throw new UsageError('attach', '--persist needs netlink (the kernel has no nbd netlink family here, or --ioctl was given)');
  const conns = await connectAll(uri, o.connections, signal);
  if (conns.length > 1 && !conns[0]!.info.can.multiConn) {
    await Promise.allSettled(conns.map((c) => c.disconnect()));
    throw new NbdInvalidArgumentError(`-C ${conns.length}: the export does not allow several connections (no CAN_MULTI_CONN)`);
  }
  const tls = conns[0]!.tls !== undefined;
  const size = conns[0]!.info.size;
  trace(`${conns.length} connection(s), ${size} bytes, flags 0x${conns[0]!.info.flags.toString(16)}, ${o.mode}`);
  const index = await configure(handOver(conns, o.readOnly), {
    mode: o.mode,
    ...(o.index !== undefined ? { index: o.index } : {}),
    ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
    ...(o.mode === 'netlink'
      ? { backend: uri, ...(o.deadTimeout !== undefined || o.persist ? { deadConnTimeout: o.deadTimeout ?? 60 } : {}) }
      : {}),
    ...(o.blockSize !== undefined ? { blockSize: o.blockSize } : {}),
    signal,
  });
  if (!o.persist && !tls && o.mode === 'netlink') {
    await announce(io, o.json, index, size);
    return ExitCode.OK;
  }
  // The supervisor watches before the device is announced: a link that dies after that is caught.
  const sup = o.persist
    ? await supervise(index, async () => handOver(await connectAll(uri, o.connections, signal), o.readOnly), {
        backend: uri,
        onReconnect: reconnectReporter(io, index),
        signal,
      }).catch(async (e: unknown) => {
        await disconnect(index).catch(() => {});
        throw e;
      })
    : undefined;
  await announce(io, o.json, index, size);
  const why = o.persist ? 'reconnecting when the server goes away' : tls ? 'pumping TLS to the kernel' : 'running the ioctl connection';
  io.stderr.write(
    `nbd attach: /dev/nbd${index} attached; staying in the foreground (${why}); Ctrl-C or 'nbd detach /dev/nbd${index}' detaches it\n`,
  );
  try {
    await untilDetached(index, signal);
  } finally {
    sup?.close();
  }
  if (signal.aborted) await disconnect(index).catch(() => {});
  return ExitCode.OK;
}

/** Says each reconnect, and why attempts fail — once per distinct reason, not every 200 ms. */
function reconnectReporter(io: Io, index: number): (err?: unknown) => void {
  let said: string | undefined;
  return (err) => {
    if (err === undefined) {
      said = undefined;
      io.stderr.write(`nbd attach: reconnected /dev/nbd${index}\n`);
      return;
    }
    const why = (err as Error).message;
    if (why !== said) io.stderr.write(`nbd attach: reconnecting /dev/nbd${index}: ${why}; retrying\n`);
    said = why;
  };
}

/** Resolves once /dev/nbdN is no longer connected, or `signal` aborts. */
async function untilDetached(index: number, signal: AbortSignal): Promise<void> {
  const { promise, resolve } = Promise.withResolvers<void>();
  const untie = tieToSignal(signal, () => resolve());
  const timer = setInterval(() => {
    status(index)
      .then((s) => {
        if (!s.some((d) => d.connected)) resolve();
      })
      .catch(() => resolve());
  }, 1000);
  try {
    await promise;
  } finally {
    clearInterval(timer);
    untie();
  }
}

/** Runs `nbd detach`. */
export async function detachCommand(argv: readonly string[], io: Io, signal: AbortSignal): Promise<number> {
  const { positionals } = parseCommand({ name: 'detach', options: {} }, argv);
  const [dev] = expectPositionals('detach', positionals, ['DEV']);
  const index = deviceIndex('detach', dev!);
  const s = await status(index, { signal });
  if (!s.some((d) => d.connected)) throw new NbdInvalidArgumentError(`/dev/nbd${index} is not attached`);
  await disconnect(index, { signal });
  tracer(io, 'detach')(`/dev/nbd${index} detached`);
  return ExitCode.OK;
}

/** One device as `nbd devices` reports it. */
export interface DeviceReport {
  device: string;
  index: number;
  connected: boolean;
  size: number;
  'read-only': boolean;
  pid: number | null;
  backend: string | null;
}

function sysfs(index: number, file: string): string | undefined {
  const p = `/sys/block/nbd${index}/${file}`;
  try {
    return existsSync(p) ? readFileSync(p, 'utf8').trim() : undefined;
  } catch {
    return undefined;
  }
}

function reportOf(index: number, connected: boolean): DeviceReport {
  const pid = sysfs(index, 'pid');
  return {
    device: `/dev/nbd${index}`,
    index,
    connected,
    size: connected ? Number(sysfs(index, 'size') ?? 0) * 512 : 0,
    'read-only': sysfs(index, 'ro') === '1',
    pid: pid !== undefined && pid !== '' ? Number(pid) : null,
    backend: connected ? sysfs(index, 'backend') || null : null,
  };
}

/** Runs `nbd devices`. */
export async function devicesCommand(argv: readonly string[], io: Io, signal: AbortSignal): Promise<number> {
  const { values: v } = parseCommand({ name: 'devices', options: { json: { type: 'boolean' }, all: { type: 'boolean' } } }, argv);
  const found = await status(undefined, { signal }).catch((e: unknown) => {
    // No netlink family and no /dev/nbdN: the module is not loaded (the library's words suggest its own mode option).
    if (isNoNetlink(e))
      throw new NbdSystemError('there are no NBD devices: the nbd module is not loaded (modprobe nbd)', 'ENOENT', 2, { cause: e });
    throw e;
  });
  const all = found.sort((a, b) => a.index - b.index);
  const reports = all.filter((d) => v.all || d.connected).map((d) => reportOf(d.index, d.connected));
  if (v.json) {
    await writeAll(io.stdout, `${JSON.stringify(reports, null, 2)}\n`);
    return ExitCode.OK;
  }
  if (reports.length === 0) {
    await writeAll(io.stdout, `no attached devices (of ${all.length}; --all lists them)\n`);
    return ExitCode.OK;
  }
  const rows = reports.map((r) => [
    r.device,
    r.connected ? 'attached' : 'free',
    r.connected ? String(r.size) : '-',
    r['read-only'] ? 'ro' : 'rw',
    r.pid === null ? '-' : String(r.pid),
    r.backend ?? '-',
  ]);
  const head = ['DEVICE', 'STATE', 'SIZE', 'MODE', 'PID', 'BACKEND'];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(width[i]!))).join('  ');
  await writeAll(io.stdout, `${[line(head), ...rows.map(line)].join('\n')}\n`);
  return ExitCode.OK;
}

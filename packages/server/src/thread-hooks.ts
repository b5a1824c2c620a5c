// The hooks of ServeOptions (preconnect, open) are functions, which cannot cross to a
// worker thread. A worker calls them on the main thread by message, with the arguments
// they get on one thread, so they mean the same there: preconnect's second call (once
// TLS is up) and `open` see who the client is and decide. A device that `open` returns
// crosses as its share() recipe; the main thread keeps it open until the worker's handle
// on it is closed (or its connection, or the worker, is gone).
import type { TlsIdentity } from '@nbd/node';
import type { Device, DeviceRecipe, Export } from './device.js';
import type { Logger } from './logger.js';
import type { OpenContext } from './negotiation.js';
import type { ConnectionHooks, ConnectionInfo, HookKey } from './serve-options.js';

/** OpenContext as data: the export by name (the main thread has the Export itself). */
export interface OpenRequest {
  exportName: string;
  clientAddress: string;
  readOnly: boolean;
  tls: TlsIdentity | undefined;
}
/** A device `open` returned: how the worker opens its own handle, and the main thread's handle number. */
export interface OpenedDevice {
  recipe: DeviceRecipe;
  handle: number;
}

/** Which hook, for which connection, with what arguments. */
type Call = { conn: number } & ({ hook: 'preconnect'; info: ConnectionInfo } | { hook: 'open'; ctx: OpenRequest });
/** Worker → main: call a hook. */
export type HookCall = { type: 'call'; id: number } & Call;
/** Worker → main: its handle on an opened device is closed. */
export type HookRelease = { type: 'release'; handle: number };
/** Main → worker: a call's outcome. */
export type HookResult = { type: 'result'; id: number; value: boolean | OpenedDevice } | { type: 'result'; id: number; error: string };

async function closeQuietly(device: Device, logger: Logger): Promise<void> {
  try {
    await device.close?.();
  } catch (e) {
    logger.warn(`device close failed: ${(e as Error).message}`);
  }
}

/** The main thread's side: runs the hooks for every worker and holds the devices `open` returned. */
export class HookHost {
  private readonly devices = new Map<number, { owner: object; conn: number; device: Device }>();
  private nextHandle = 0;

  constructor(
    private readonly hooks: ConnectionHooks,
    private readonly exports: readonly Export[],
    private readonly logger: Logger,
  ) {}

  /** Which hooks exist (what a worker makes proxies for). */
  get present(): Record<HookKey, boolean> {
    return { preconnect: this.hooks.preconnect !== undefined, open: this.hooks.open !== undefined };
  }

  /** Runs `m` for a worker (`owner`); never rejects. */
  async answer(owner: object, m: HookCall): Promise<HookResult> {
    try {
      return {
        type: 'result',
        id: m.id,
        value: m.hook === 'preconnect' ? await this.preconnect(m.info) : await this.open(owner, m.conn, m.ctx),
      };
    } catch (e) {
      return { type: 'result', id: m.id, error: e instanceof Error ? e.message : String(e) };
    }
  }

  private async preconnect(info: ConnectionInfo): Promise<boolean> {
    const hook = this.hooks.preconnect;
    if (hook === undefined) throw new Error('no preconnect hook');
    return Boolean(await hook(info));
  }

  private async open(owner: object, conn: number, req: OpenRequest): Promise<OpenedDevice> {
    const hook = this.hooks.open;
    const exp = this.exports.find((e) => e.name === req.exportName);
    if (hook === undefined || exp === undefined) throw new Error(`no open hook or no export "${req.exportName}"`);
    const ctx: OpenContext = { export: exp, clientAddress: req.clientAddress, readOnly: req.readOnly, tls: req.tls };
    const device = await hook(ctx);
    let recipe: DeviceRecipe;
    try {
      if (typeof device?.share !== 'function') throw new Error('the device the open hook returned has no share(), which threads need');
      recipe = device.share();
    } catch (e) {
      if (device) await closeQuietly(device, this.logger);
      throw e;
    }
    const handle = this.nextHandle++;
    this.devices.set(handle, { owner, conn, device });
    return { recipe, handle };
  }

  /** The worker closed its handle: close ours. */
  release(handle: number): void {
    const d = this.devices.get(handle);
    if (d === undefined) return;
    this.devices.delete(handle);
    void closeQuietly(d.device, this.logger);
  }

  /** Connection `conn` of `owner` (or, without `conn`, every one of them) is gone: close what it still held. */
  drop(owner: object, conn?: number): void {
    for (const [handle, d] of this.devices) if (d.owner === owner && (conn === undefined || d.conn === conn)) this.release(handle);
  }
}

/** The worker's side: proxies that call the main thread's hooks. */
export class HookClient {
  private readonly pending = new Map<number, PromiseWithResolvers<boolean | OpenedDevice>>();
  private nextId = 0;

  constructor(
    private readonly post: (m: HookCall | HookRelease) => void,
    private readonly present: Record<HookKey, boolean>,
    /** Opens a device from its recipe, on this thread. */
    private readonly openRecipe: (recipe: DeviceRecipe) => Promise<Device>,
  ) {}

  /** The hooks connection `conn` is served with: a proxy for each hook the main thread has. */
  forConnection(conn: number): ConnectionHooks {
    const proxies: { [K in HookKey]-?: NonNullable<ConnectionHooks[K]> } = {
      preconnect: async (info) => (await this.call({ conn, hook: 'preconnect', info: { ...info } })) === true,
      open: async (ctx) => {
        const { export: exp, clientAddress, readOnly, tls } = ctx;
        return this.opened(
          (await this.call({ conn, hook: 'open', ctx: { exportName: exp.name, clientAddress, readOnly, tls } })) as OpenedDevice,
        );
      },
    };
    const hooks: Record<string, unknown> = {};
    for (const key of Object.keys(proxies) as HookKey[]) if (this.present[key]) hooks[key] = proxies[key];
    return hooks as ConnectionHooks;
  }

  /** A call's outcome from the main thread. */
  settle(m: HookResult): void {
    const p = this.pending.get(m.id);
    if (p === undefined) return;
    this.pending.delete(m.id);
    if ('error' in m) p.reject(new Error(m.error));
    else p.resolve(m.value);
  }

  private call(c: Call): Promise<boolean | OpenedDevice> {
    const id = this.nextId++;
    const p = Promise.withResolvers<boolean | OpenedDevice>();
    this.pending.set(id, p);
    this.post({ type: 'call', id, ...c });
    return p.promise;
  }

  /** This thread's handle on the device; closing it releases the main thread's. */
  private async opened({ recipe, handle }: OpenedDevice): Promise<Device> {
    let device: Device;
    try {
      device = await this.openRecipe(recipe);
    } catch (e) {
      this.post({ type: 'release', handle });
      throw e;
    }
    const close = device.close?.bind(device);
    device.close = async () => {
      try {
        await close?.();
      } finally {
        this.post({ type: 'release', handle });
      }
    };
    return device;
  }
}

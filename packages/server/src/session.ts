// The only state that crosses from negotiation to transmission.
import type { BlockSizes, Device, Export } from './device.js';

export interface Session {
  export: Export;
  /** The device serving this connection (the export's, or one from `ServeOptions.open`). */
  device: Device;
  /** Transmission flags sent to the client. */
  flags: number;
  /** Constraints enforced on requests (advertised, or the spec's defaults: 1 / 4096 / maxPayload). */
  blockSizes: BlockSizes;
  structured: boolean;
  extended: boolean;
  /** Selected meta contexts for this export, by id (only `base:allocation` exists). */
  metaContexts: Map<number, string>;
}

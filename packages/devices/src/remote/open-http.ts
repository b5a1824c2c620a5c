// The worker-thread side of HttpDevice.share(): the same image, its own connections.
import type { Device } from '@nbd/server';
import { HttpDevice, type HttpRecipeArgs } from './http-device.js';

/** Opens the HttpDevice a recipe describes, without asking the server again. */
export function openDevice(args: unknown): Device {
  return HttpDevice.fromRecipe(args as HttpRecipeArgs);
}

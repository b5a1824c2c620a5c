import { NbdAbortError, NbdInvalidArgumentError } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import { io, readAll } from '../../test/devices.js';
import { SparseMemoryDevice } from '../memory/sparse-memory-device.js';
import { DataDevice } from '../sources/data-device.js';
import { partition, partitionsOf } from './partition.js';

const MiB = 1024 * 1024;

/** An MBR disk: partition 1 at 1 MiB (2 MiB), an extended partition 3 at 4 MiB holding logical 5 and 6. */
export function mbrDisk(): DataDevice {
  // Entries: status, CHS, type, CHS, le32 first sector, le32 sector count.
  return new DataDevice(
    `@0x1be 0 0 0 0 0x83 0 0 0 le32:2048 le32:4096
     @0x1de 0 0 0 0 0x05 0 0 0 le32:8192 le32:8192
     @0x1fe 0x55 0xaa
     @${4 * MiB + 0x1be} 0 0 0 0 0x83 0 0 0 le32:2048 le32:2048
     @${4 * MiB + 0x1ce} 0 0 0 0 0x05 0 0 0 le32:4096 le32:4096
     @${4 * MiB + 0x1fe} 0x55 0xaa
     @${6 * MiB + 0x1be} 0 0 0 0 0x83 0 0 0 le32:2048 le32:1024
     @${6 * MiB + 0x1fe} 0x55 0xaa`,
    { size: 10 * MiB },
  );
}

/** A GPT disk: entries at LBA 2, partition 1 empty, 2 at LBA 2048 (1 MiB long). */
export function gptDisk(): DataDevice {
  return new DataDevice(
    `@0x1be 0 0 0 0 0xee 0 0 0 le32:1 le32:0xffffffff @0x1fe 0x55 0xaa
     @512 "EFI PART" le32:0x10000 le32:92 le32:0 le32:0 le64:1 le64:20479 le64:34 le64:20446
     @${512 + 72} le64:2 le32:128 le32:128
     @${1024 + 128} 0xaf 0x3d 0xc6 0x0f 0x83 0x84 0x72 0x47 0x8e 0x79 0x3d 0x69 0xd8 0x47 0x7d 0xe4
     @${1024 + 128 + 32} le64:2048 le64:4095`,
    { size: 10 * MiB },
  );
}

describe('partition', () => {
  it('reads MBR primary and logical partitions', async () => {
    const disk = mbrDisk();
    expect((await partitionsOf(disk)).map((p) => [p.number, p.start, p.length, p.type])).toEqual([
      [1, MiB, 2 * MiB, '83'],
      [3, 4 * MiB, 4 * MiB, '05'],
      [5, 5 * MiB, MiB, '83'],
      [6, 7 * MiB, MiB / 2, '83'],
    ]);
    await disk.writeAt!(Uint8Array.of(7, 7), 5 * MiB, io);
    const p5 = await partition(disk, 5);
    expect(p5.size).toBe(MiB);
    expect([...(await readAll(p5)).subarray(0, 3)]).toEqual([7, 7, 0]);
  });

  it('reads GPT entries (number = entry index + 1)', async () => {
    const parts = await partitionsOf(gptDisk());
    expect(parts).toEqual([{ number: 2, start: MiB, length: MiB, type: '0fc63daf-8483-4772-8e79-3d69d8477de4' }]);
    expect((await partition(gptDisk(), 2)).size).toBe(MiB);
  });

  it('fails at build time for a partition that does not exist, lies beyond the disk, or no table', async () => {
    await expect(partition(mbrDisk(), 2)).rejects.toThrow(/partition 2 does not exist \(partitions: 1, 3, 5, 6\)/);
    await expect(partition(gptDisk(), 1)).rejects.toThrow(/does not exist/);
    await expect(partition(new SparseMemoryDevice(MiB), 1)).rejects.toThrow(/no MBR boot signature/);
    const short = new DataDevice('@0x1be 0 0 0 0 0x83 0 0 0 le32:2048 le32:4096 @0x1fe 0x55 0xaa', { size: 2 * MiB });
    await expect(partition(short, 1)).rejects.toThrow(/lies beyond the end of the disk/);
    await expect(partition(mbrDisk(), 0)).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    await expect(partition(mbrDisk(), 1, { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(NbdAbortError);
    // Extended partition at sector 8; its second EBR (sector 24) names itself as the next one.
    const ebr = (sector: number) => `@${sector * 512 + 0x1ce} 0 0 0 0 0x05 0 0 0 le32:16 le32:8 @${sector * 512 + 0x1fe} 0x55 0xaa`;
    const loop = new DataDevice(`@0x1be 0 0 0 0 0x05 0 0 0 le32:8 le32:100 @0x1fe 0x55 0xaa ${ebr(8)} ${ebr(24)}`, { size: MiB });
    await expect(partitionsOf(loop)).rejects.toThrow(/loops/);
  });
});

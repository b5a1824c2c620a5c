// Marks some symbol-version needs of an ELF64 little-endian shared object as weak
// (VER_FLG_WEAK in its .gnu.version_r entries), so the dynamic loader accepts a
// library that lacks them; the symbols themselves must then come from elsewhere
// (shim.cc). Used on Jazzer.js's prebuilt addon, linked against glibc 2.38 and
// GCC 13's libstdc++, to load it on Debian 12 (glibc 2.36, GCC 12).
import { readFileSync, writeFileSync } from 'node:fs';

const SHT_GNU_VERNEED = 0x6ffffffe;
const VER_FLG_WEAK = 0x2;

/** Returns the names weakened ("file version"); writes the patched copy to `out`. */
export function weakenVersions(file, out, versions) {
  const b = readFileSync(file);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) throw new Error(`${file}: not a 64-bit little-endian ELF file`);
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const section = (i) => {
    const o = shoff + i * shentsize;
    return {
      type: b.readUInt32LE(o + 4),
      offset: Number(b.readBigUInt64LE(o + 0x18)),
      link: b.readUInt32LE(o + 0x28),
      info: b.readUInt32LE(o + 0x2c),
    };
  };
  const weakened = [];
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== SHT_GNU_VERNEED) continue;
    const strtab = section(s.link).offset;
    const str = (o) => {
      let e = strtab + o;
      while (b[e] !== 0) e++;
      return b.toString('latin1', strtab + o, e);
    };
    // Elf64_Verneed: u16 version | u16 cnt | u32 file | u32 aux | u32 next
    // Elf64_Vernaux: u32 hash | u16 flags | u16 other | u32 name | u32 next
    let need = s.offset;
    for (let n = 0; n < s.info; n++) {
      let aux = need + b.readUInt32LE(need + 8);
      for (let a = 0; a < b.readUInt16LE(need + 2); a++) {
        const name = str(b.readUInt32LE(aux + 8));
        if (versions.includes(name)) {
          b.writeUInt16LE(b.readUInt16LE(aux + 4) | VER_FLG_WEAK, aux + 4);
          weakened.push(`${str(b.readUInt32LE(need + 4))} ${name}`);
        }
        aux += b.readUInt32LE(aux + 12);
      }
      need += b.readUInt32LE(need + 12);
    }
  }
  writeFileSync(out, b);
  return weakened;
}

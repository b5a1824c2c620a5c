// node -r fuzz/compat/preload.cjs: loads the glibc/libstdc++ shim (built by fuzz/setup.mjs
// when the prebuilt Jazzer.js addon needed it) with RTLD_GLOBAL, before the addon.
const { existsSync } = require('node:fs');
const { constants } = require('node:os');
const { join } = require('node:path');

const shim = join(__dirname, '..', 'node_modules', '.nbd-compat', 'shim.node');
if (existsSync(shim)) process.dlopen({ exports: {} }, shim, constants.dlopen.RTLD_NOW | constants.dlopen.RTLD_GLOBAL);

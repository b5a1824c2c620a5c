// What Jazzer.js's prebuilt addon needs from glibc 2.38 and GCC 13's libstdc++ that
// Debian 12 lacks: C23's strtol/strtoul entry points (same results for the inputs
// libFuzzer parses) and GCC 13's out-of-line iostream initialiser. Loaded globally
// (preload.cjs) before the addon, whose needs for those versions are made weak.
#include <cstdlib>
#include <ios>

extern "C" {
__attribute__((visibility("default"))) long __isoc23_strtol(const char *s, char **end, int base) { return strtol(s, end, base); }
__attribute__((visibility("default"))) unsigned long __isoc23_strtoul(const char *s, char **end, int base) { return strtoul(s, end, base); }
// Lets Node load this file as a (Node-API) module: it exports nothing.
__attribute__((visibility("default"))) void *napi_register_module_v1(void *, void *exports) { return exports; }
}

namespace std {
__attribute__((visibility("default"))) void ios_base_library_init() { static ios_base::Init init; }
}

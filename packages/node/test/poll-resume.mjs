// Run in a bare process (a test runner's IPC would wake the event loop and hide the
// bug): how long after a poll callback resolves a promise does its awaiter resume?
// Prints the milliseconds. Uses the built dist/ of @nbd/node.
import { closeFd, libc, pollReadable, socketpairFds } from '../dist/ffi.js';

const [a, b] = socketpairFds();
const readable = Promise.withResolvers();
const buf = new Uint8Array(16);
// Read what arrived, as the netlink reader does: the fd is quiet again, nothing else wakes the loop.
const poll = pollReadable(a, () => {
  libc().recv(a, buf, buf.length, 0);
  readable.resolve();
});
// Only a far timer keeps the loop alive: without the fix, the awaiter resumes when it fires.
const guard = setTimeout(() => {}, 3000);
const start = performance.now();
libc().send(b, Uint8Array.of(1), 1, 0);
await readable.promise;
console.log((performance.now() - start).toFixed(1));
clearTimeout(guard);
poll.stop();
poll.close();
closeFd(a);
closeFd(b);

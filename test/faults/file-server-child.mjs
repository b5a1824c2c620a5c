// Our server over a FileDevice, in a process of its own so it can be SIGKILLed (run
// under strace by sigkill-durability.test.ts). argv: socket path, image path.
// Prints "ready PID" once listening.
import { FileDevice, listen } from '../../packages/server/dist/index.js';

const [path, image] = process.argv.slice(2);
const device = await FileDevice.open(image);
await listen({ path }, [{ name: 'disk', size: device.size, device }]);
console.log(`ready ${process.pid}`);

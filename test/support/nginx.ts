// nginx from Debian as the tests' HTTP server: started per test file on loopback ports
// with its own configuration in a temp dir (every path it writes to is in there), over
// HTTP and HTTPS (a test CA made by tls.ts), serving the files of `root` at these paths:
//   /NAME                   the file, with Range support (206, Content-Range, ETag)
//   /norange/NAME           the file, Range ignored (max_ranges 0: always 200 and all of it)
//   /redirect/NAME          302 to /NAME          /redirect2/NAME  301 to /redirect/NAME
//   /redirect-https/NAME    302 to the HTTPS server's /NAME
//   /loop/NAME              302 to itself, for ever
//   anything missing        404
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PATH, requireTool, tempDir } from './peers.js';
import { freePort } from './ports.js';
import { makeCredentials } from './tls.js';

export interface Nginx {
  /** `http://127.0.0.1:PORT` */
  http: string;
  /** `https://localhost:PORT` (its certificate names localhost and 127.0.0.1) */
  https: string;
  /** The test CA that signed the HTTPS server's certificate (PEM file). */
  caFile: string;
  /** A CA that did not sign it (PEM file), for "untrusted certificate" cases. */
  otherCaFile: string;
  /** The directory served (world-readable: nginx's workers run as nobody). */
  root: string;
  /** The requests nginx logged so far, one line each: `METHOD URI STATUS RANGE`. */
  requests(): string[];
  stop(): Promise<void>;
}

function config(dir: string, root: string, port: number, tlsPort: number, certs: string): string {
  const locations = (httpsBase: string) => `
    location / { root ${root}; }
    location /norange/ { alias ${root}/; max_ranges 0; }
    location ~ ^/redirect/(.*)$ { return 302 /$1; }
    location ~ ^/redirect2/(.*)$ { return 301 /redirect/$1; }
    location ~ ^/redirect-https/(.*)$ { return 302 ${httpsBase}/$1; }
    location ~ ^/loop/ { return 302 $uri; }`;
  const https = `https://localhost:${tlsPort}`;
  return `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 512; }
http {
  types { application/octet-stream raw img qcow2; }
  default_type application/octet-stream;
  log_format req '$request_method $request_uri $status $http_range';
  access_log ${dir}/access.log req;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  sendfile on;
  server {
    listen 127.0.0.1:${port};
    ${locations(https)}
  }
  server {
    listen 127.0.0.1:${tlsPort} ssl;
    server_name localhost;
    ssl_certificate ${certs}/server-cert.pem;
    ssl_certificate_key ${certs}/server-key.pem;
    ${locations(https)}
  }
}
`;
}

async function waitForHttp(url: string, proc: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`nginx exited with ${proc.exitCode} before answering:\n${log()}`);
    try {
      await fetch(url, { signal: AbortSignal.timeout(1000) });
      return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`nginx did not answer ${url} within 15 s:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts nginx serving the files in `<dir>/root` (put them there: `nginx.root`). */
export async function startNginx(): Promise<Nginx> {
  const nginx = requireTool('nginx');
  const { dir, cleanup } = tempDir('nbd-nginx-');
  chmodSync(dir, 0o755); // the workers (nobody) read the files under it
  const root = join(dir, 'root');
  mkdirSync(root, { mode: 0o755 });
  mkdirSync(join(dir, 'tmp'));
  const creds = await makeCredentials(join(dir, 'tls'));
  const [port, tlsPort] = [await freePort(), await freePort()];
  writeFileSync(join(dir, 'nginx.conf'), config(dir, root, port, tlsPort, creds.dir));
  // -e: the error log before the configuration is read (else /var/log/nginx/error.log).
  const proc = spawn(nginx, ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], {
    env: { ...process.env, PATH },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const errorLog = () => {
    try {
      return out + readFileSync(join(dir, 'error.log'), 'utf8');
    } catch {
      return out;
    }
  };
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    cleanup();
  };
  const http = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${http}/`, proc, errorLog);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    http,
    https: `https://localhost:${tlsPort}`,
    caFile: join(creds.dir, 'ca-cert.pem'),
    otherCaFile: join(creds.otherCa, 'ca-cert.pem'),
    root,
    requests: () => {
      try {
        return readFileSync(join(dir, 'access.log'), 'utf8').split('\n').filter(Boolean);
      } catch {
        return [];
      }
    },
    stop,
  };
}

// Starts the real settings-api binary on a free port with a fresh SQLite file, and mints
// tokens with its own `token` command. SETTINGS_API_BIN names the binary; by default the one
// `cargo build` leaves in the target directory (CARGO_TARGET_DIR, or the repository's).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const here = dirname(fileURLToPath(import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ?? join(here, '..', '..', 'target');
const binary = process.env.SETTINGS_API_BIN ?? join(targetDir, 'debug', 'settings-api');
const secret = 'client-suite-secret-that-is-at-least-32-bytes';

export async function startServer(extraEnv = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'settings-api-clients-'));
  const env = {
    ...process.env,
    DATABASE_URL: `sqlite://${join(dir, 'settings.db')}?mode=rwc`,
    BIND_ADDR: '127.0.0.1:0',
    JWT_SECRET: secret,
    LOG_FORMAT: 'json',
    RUST_LOG: 'info',
    ...extraEnv,
  };
  const child = spawn(binary, ['serve'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('settings-api did not start in 30 s')), 30_000);
    child.once('exit', (code) => reject(new Error(`settings-api exited with ${code}`)));
    lines.on('line', (line) => {
      try {
        const event = JSON.parse(line);
        if (event.graphiql) {
          clearTimeout(timer);
          resolve(event.graphiql);
        }
      } catch {
        // Not a log line of ours.
      }
    });
  });
  const token = (sub) =>
    execFileSync(binary, ['token', '--sub', sub, '--ttl', '1h'], { env }).toString().trim();
  return {
    url,
    origin: new URL(url).origin,
    wsUrl: url.replace(/^http/, 'ws'),
    token,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// graphql-http's server audits (the graphql-over-http spec's MUSTs and SHOULDs) against the
// real binary: any failure or warning fails the suite.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serverAudits } from 'graphql-http';

import { startServer } from './server.js';

let server;
let token;

before(async () => {
  server = await startServer();
  token = server.token('auditor');
});

after(async () => {
  await server?.stop();
});

test('graphql-http server audits: no failure and no warning (MAY notices are listed)', async () => {
  const audits = serverAudits({
    url: server.url,
    fetchFn: (input, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${token}`);
      return fetch(input, { ...init, headers });
    },
  });
  const problems = [];
  for (const audit of audits) {
    const result = await audit.fn();
    if (result.status === 'error' || result.status === 'warn') {
      problems.push(`${result.status}: ${audit.name}: ${result.reason}`);
    } else if (result.status === 'notice') {
      console.log(`notice (a MAY): ${audit.name}: ${result.reason}`);
    }
  }
  assert.ok(audits.length > 0);
  assert.deepEqual(problems, [], problems.join('\n'));
});

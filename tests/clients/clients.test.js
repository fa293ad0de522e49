// The client libraries web and mobile apps use, each with its defaults, against the real
// binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import WebSocket from 'ws';

import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { Client as UrqlClient, cacheExchange, fetchExchange } from '@urql/core';
import { GraphQLClient } from 'graphql-request';
import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';

import { startServer } from './server.js';

let server;
let token;

before(async () => {
  server = await startServer();
  token = server.token('alice');
});

after(async () => {
  await server?.stop();
});

const SETTINGS = gql`
  query Settings {
    settings {
      id
      key
      value
      version
    }
  }
`;
const SET = gql`
  mutation Set($key: String!, $value: JSON!) {
    setSetting(key: $key, value: $value) {
      id
      key
      value
      version
    }
  }
`;

test('Apollo Client: a mutation updates the cached list through the normalized cache', async () => {
  const cache = new InMemoryCache();
  const client = new ApolloClient({
    cache,
    link: new HttpLink({ uri: server.url, headers: { authorization: `Bearer ${token}` } }),
  });
  await client.mutate({ mutation: SET, variables: { key: 'apollo', value: 'first' } });
  const first = await client.query({ query: SETTINGS });
  assert.equal(first.data.settings.find((s) => s.key === 'apollo').value, 'first');
  await client.mutate({ mutation: SET, variables: { key: 'apollo', value: 'second' } });
  // No refetch: the cached list shows the new value because Setting has an id.
  const cached = cache.readQuery({ query: SETTINGS });
  assert.equal(cached.settings.find((s) => s.key === 'apollo').value, 'second');
});

test('urql with its default exchanges sends queries as GET and gets JSON', async () => {
  const requests = [];
  const client = new UrqlClient({
    url: server.url,
    exchanges: [cacheExchange, fetchExchange],
    fetchOptions: { headers: { authorization: `Bearer ${token}` } },
    fetch: (input, init) => {
      requests.push(init?.method ?? 'GET');
      return fetch(input, init);
    },
  });
  const result = await client.query('{ me { id } }', {}).toPromise();
  assert.equal(result.error, undefined, String(result.error));
  assert.equal(result.data.me.id, 'alice');
  assert.deepEqual(requests, ['GET']);
  const written = await client
    .mutation('mutation { setSetting(key: "urql", value: 1) { version } }', {})
    .toPromise();
  assert.equal(written.error, undefined, String(written.error));
  assert.equal(written.data.setSetting.version, 1);
  assert.equal(requests[1], 'POST');
});

test('graphql-request, over POST and over GET', async () => {
  const post = new GraphQLClient(server.url, { headers: { authorization: `Bearer ${token}` } });
  const written = await post.request('mutation { setSetting(key: "gr", value: true) { key } }');
  assert.equal(written.setSetting.key, 'gr');
  const get = new GraphQLClient(server.url, {
    method: 'GET',
    headers: { authorization: `Bearer ${token}` },
  });
  const read = await get.request('query($k: [String!]) { settings(keys: $k) { value } }', { k: ['gr'] });
  assert.deepEqual(read.settings, [{ value: true }]);
});

test("Apollo's persisted-query link registers a hash once, over GET and over POST", async () => {
  for (const useGETForHashedQueries of [true, false]) {
    const sent = [];
    const link = new PersistedQueryLink({
      sha256: (text) => createHash('sha256').update(text).digest('hex'),
      useGETForHashedQueries,
    }).concat(
      new HttpLink({
        uri: server.url,
        headers: { authorization: `Bearer ${token}` },
        fetch: (input, init) => {
          const body = init?.body ? JSON.parse(init.body) : {};
          sent.push({ method: init?.method ?? 'GET', withQuery: 'query' in body || String(input).includes('query=') });
          return fetch(input, init);
        },
      }),
    );
    const client = new ApolloClient({ cache: new InMemoryCache(), link });
    const query = gql`
      query Me${useGETForHashedQueries ? 'Get' : 'Post'} {
        me {
          id
        }
      }
    `;
    const first = await client.query({ query, fetchPolicy: 'network-only' });
    assert.equal(first.data.me.id, 'alice');
    // The hash alone, then the query with its hash after PersistedQueryNotFound.
    assert.deepEqual(sent.map((s) => s.withQuery), [false, true]);
    const again = await client.query({ query, fetchPolicy: 'network-only' });
    assert.equal(again.data.me.id, 'alice');
    assert.equal(sent.length, 3, 'the hash alone is enough now');
    assert.equal(sent[2].withQuery, false);
    assert.equal(sent[0].method, useGETForHashedQueries ? 'GET' : 'POST');
  }
});

test('graphql-ws: subscribe, write over HTTP, receive the change', async () => {
  const client = createWsClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${token}` },
  });
  try {
    const received = new Promise((resolve, reject) => {
      const stop = client.subscribe(
        { query: 'subscription { settingChanged(keys: ["ws"]) { key kind setting { value } } }' },
        {
          next: (message) => {
            resolve(message);
            stop();
          },
          error: reject,
          complete: () => {},
        },
      );
    });
    // The protocol does not acknowledge a subscribe: write until the event arrives.
    const http = new GraphQLClient(server.url, { headers: { authorization: `Bearer ${token}` } });
    let message;
    for (let attempt = 0; attempt < 50 && !message; attempt++) {
      await http.request('mutation { setSetting(key: "ws", value: "live") { version } }');
      message = await Promise.race([received, new Promise((resolve) => setTimeout(resolve, 100))]);
    }
    assert.ok(message, 'the change arrived');
    assert.equal(message.data.settingChanged.key, 'ws');
    assert.deepEqual(message.data.settingChanged.setting, { value: 'live' });
  } finally {
    await client.dispose();
  }
});

test('graphql-sse: a subscription over Server-Sent Events resumes from a snapshot', async () => {
  const http = new GraphQLClient(server.url, { headers: { authorization: `Bearer ${token}` } });
  const { snapshot } = await http.request('{ snapshot { cursor } }');
  // Written before subscribing: the subscription replays it from the cursor.
  await http.request('mutation { setSetting(key: "sse", value: "offline") { version } }');
  const client = createSseClient({
    url: server.url,
    headers: { authorization: `Bearer ${token}` },
  });
  try {
    const values = [];
    await new Promise((resolve, reject) => {
      const stop = client.subscribe(
        {
          query: 'subscription($since: String) { settingChanged(since: $since, keys: ["sse"]) { key setting { value } } }',
          variables: { since: snapshot.cursor },
        },
        {
          next: (message) => {
            if (message.errors) return reject(new Error(JSON.stringify(message.errors)));
            values.push(message.data.settingChanged.setting.value);
            if (values.length === 1) {
              http.request('mutation { setSetting(key: "sse", value: "live") { version } }').catch(reject);
            } else {
              stop();
              resolve();
            }
          },
          error: reject,
          complete: () => {},
        },
      );
    });
    assert.deepEqual(values, ['offline', 'live']);
  } finally {
    client.dispose();
  }
});

test('a CORS preflight as a browser sends it', async () => {
  const reply = await fetch(server.url, {
    method: 'OPTIONS',
    headers: {
      origin: 'https://app.example.com',
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization,content-type',
    },
  });
  assert.ok(reply.ok, `${reply.status}`);
  assert.equal(reply.headers.get('access-control-allow-origin'), '*');
  assert.match(reply.headers.get('access-control-allow-headers') ?? '', /authorization/i);
});

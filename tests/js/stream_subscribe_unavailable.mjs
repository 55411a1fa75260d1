// Checks that `subscribe` is answered promptly with
// `{success:false, message:"Storage service unavailable"}` while the edge's core
// is down, with and without a cursor.
//
// Environment:
//   NIGHTJAR_URL       edge base URL, such as http://127.0.0.1:40123
//   SOCKET_IO_CLIENT   "4" (socket.io-client 4.x) or "2" (socket.io-client 2.2.0)
//   ADMIN_TOKEN        access token of a subject with role admin
//   CURSOR             a cursor the edge sent before core went down

import assert from 'node:assert/strict';
import {
  assertRejected,
  clientVersion,
  connectStorage,
  edgeUrl,
  requireEnv,
  runScenarios,
} from './lib.mjs';

const UNAVAILABLE = 'Storage service unavailable';

/** Maximum wait for the acknowledgement, in milliseconds. */
const PROMPT_MS = 3000;

const url = edgeUrl();
const version = clientVersion();
const adminToken = requireEnv('ADMIN_TOKEN');
const cursor = requireEnv('CURSOR');

/** Subscribes with `payload` and asserts the unavailable acknowledgement within PROMPT_MS. */
async function expectUnavailable(socket, payload, context) {
  const started = Date.now();
  const ack = await socket.subscribe(payload);
  const elapsed = Date.now() - started;
  assertRejected(ack, UNAVAILABLE, context);
  assert.ok(elapsed <= PROMPT_MS, `${context}: acknowledgement took ${elapsed} ms, more than ${PROMPT_MS} ms`);
}

await runScenarios(`subscribe with core down, client ${version}`, [
  [
    'subscribe acknowledges that storage is unavailable',
    async () => {
      const socket = await connectStorage(url, version, 'socket while core is down');
      try {
        await expectUnavailable(socket, { accessToken: adminToken, collections: ['entries'] }, 'without cursor');
        await expectUnavailable(socket, { accessToken: adminToken, collections: ['entries'], cursor }, 'with a cursor');
        assert.ok(socket.connected, `${socket.label} was disconnected`);
      } finally {
        socket.close();
      }
    },
  ],
]);

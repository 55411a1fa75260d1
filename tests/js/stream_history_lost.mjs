// Checks `subscribe` with a cursor older than the retained change history: the
// acknowledgement grants the collections with `historyLost: true`, nothing of
// the lost history is replayed, and live events follow.
//
// Environment:
//   NIGHTJAR_URL       edge base URL, such as http://127.0.0.1:40123
//   SOCKET_IO_CLIENT   "4" (socket.io-client 4.x) or "2" (socket.io-client 2.2.0)
//   ADMIN_TOKEN        access token of a subject with role admin
//   PRUNED_CURSOR      a cursor the server sent earlier whose changes were pruned since

import assert from 'node:assert/strict';
import {
  SETTLE_MS,
  apiV3,
  clientVersion,
  connectStorage,
  edgeUrl,
  requestJwt,
  requireEnv,
  runScenarios,
  show,
  sleep,
} from './lib.mjs';

const url = edgeUrl();
const version = clientVersion();
const adminToken = requireEnv('ADMIN_TOKEN');
const prunedCursor = requireEnv('PRUNED_CURSOR');

const device = `nightjar-history-lost-client${version}-${process.pid}`;

await runScenarios(`history lost, client ${version}`, [
  [
    'pruned cursor acknowledges historyLost, then live events',
    async () => {
      const jwt = await requestJwt(url, adminToken);
      const socket = await connectStorage(url, version, 'socket with a pruned cursor');
      try {
        const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'], cursor: prunedCursor });
        assert.deepEqual(
          ack,
          { success: true, collections: ['entries'], historyLost: true },
          `acknowledgement of subscribe with pruned cursor ${prunedCursor}`,
        );

        await sleep(SETTLE_MS);
        assert.deepEqual(socket.events, [], `${socket.label}: events replayed although the history was lost`);

        const body = { type: 'sgv', sgv: 140, date: Date.now() - 1000, device, app: 'nightjar-e2e' };
        const created = await apiV3(url, jwt, 'POST', '/entries', body, 201);
        const identifier = created.body.identifier;
        const event = await socket.waitForDocument('create', 'entries', identifier);
        assert.equal(typeof event.data.cursor, 'string', `live event after historyLost has no string cursor: ${show(event.data)}`);
        await sleep(SETTLE_MS);
        assert.equal(socket.events.length, 1, `${socket.label}: events after one live write: ${show(socket.events)}`);
        assert.ok(socket.connected, `${socket.label} was disconnected`);
      } finally {
        socket.close();
      }
    },
  ],
]);

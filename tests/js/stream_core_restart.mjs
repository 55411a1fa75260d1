// Subscribes one socket to the entries of an edge and records every storage
// event until the create event of END_IDENTIFIER arrives, while the test that
// runs this script restarts core behind the edge. Prints `subscribed` once the
// subscription is acknowledged and, at the end, `result <JSON>` with the events
// and any disconnections, which the test compares with its writer's log.
//
// Environment:
//   NIGHTJAR_URL       edge base URL, such as http://127.0.0.1:40123
//   SOCKET_IO_CLIENT   "4" (socket.io-client 4.x) or "2" (socket.io-client 2.2.0)
//   ADMIN_TOKEN        access token of a subject with role admin
//   END_IDENTIFIER     identifier of the entry the test writes last
//   WAIT_SECONDS       how long to wait for that entry's event (default 90)

import {
  assertGranted,
  clientVersion,
  connectStorage,
  edgeUrl,
  requireEnv,
  show,
  sleep,
} from './lib.mjs';

const url = edgeUrl();
const version = clientVersion();
const adminToken = requireEnv('ADMIN_TOKEN');
const endIdentifier = requireEnv('END_IDENTIFIER');
const waitMs = Number(process.env.WAIT_SECONDS ?? '90') * 1000;

try {
  const socket = await connectStorage(url, version, 'subscriber');
  const disconnects = [];
  socket.socket.on('disconnect', (reason) => disconnects.push({ reason, afterEvents: socket.events.length }));

  assertGranted(await socket.subscribe({ accessToken: adminToken, collections: ['entries'] }), ['entries'], 'subscriber');
  console.log('subscribed');

  const deadline = Date.now() + waitMs;
  const ended = () => socket.events.some((entry) => entry.data?.doc?.identifier === endIdentifier);
  while (!ended() && Date.now() < deadline) {
    await sleep(50);
  }

  const events = socket.events.map((entry) => ({
    event: entry.event,
    colName: entry.data?.colName,
    identifier: entry.event === 'delete' ? entry.data?.identifier : entry.data?.doc?.identifier,
    cursor: entry.data?.cursor,
  }));
  console.log(`result ${JSON.stringify({ ended: ended(), connected: socket.connected, disconnects, events })}`);
  process.exit(0);
} catch (error) {
  console.error(`FAILED - subscriber: ${error?.stack ?? show(error)}`);
  process.exit(1);
}

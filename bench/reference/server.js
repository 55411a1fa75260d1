'use strict';

// Reference server for nightjar-bench: the Socket.IO layer that Nightscout uses
// (socket.io 4.8 on Express 4), serving the same `/storage` subscribe, ack and
// room broadcast as Nightjar, fed by a REST POST that broadcasts without storing.
//
// It is a component baseline for the Socket.IO layer, not Nightscout: there is
// no database, no JWT check (the bearer token is compared as a string), no
// validation and no deduplication, so its write path costs less than
// Nightscout's.
//
// Environment:
//   PORT                   listen port; 0 picks a free one (default 0)
//   HOSTNAME               listen address (default 127.0.0.1)
//   REFERENCE_ACCESS_TOKEN the access token `subscribe` and REST accept (required)
//
// Prints `listening on http://<address>:<port>` on stderr once it accepts connections.

const http = require('node:http');
const crypto = require('node:crypto');
const express = require('express');
const { Server } = require('socket.io');

const COLLECTIONS = ['devicestatus', 'entries', 'food', 'profile', 'settings', 'treatments'];

const accessToken = process.env.REFERENCE_ACCESS_TOKEN;
if (!accessToken) {
  console.error('REFERENCE_ACCESS_TOKEN is missing: set it to the token clients will send');
  process.exit(2);
}

const app = express();
const server = http.createServer(app);
const io = new Server(server, { serveClient: false });
const storage = io.of('/storage');

// srvModified per collection, strictly increasing as in Nightscout APIv3.
const lastModified = new Map();

function nextModified(collection) {
  const previous = lastModified.get(collection) || 0;
  const value = Math.max(Date.now(), previous + 1);
  lastModified.set(collection, value);
  return value;
}

storage.on('connection', (socket) => {
  socket.on('subscribe', (payload, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    if (!payload || typeof payload !== 'object' || payload.accessToken !== accessToken) {
      reply({ success: false, message: 'Missing or bad accessToken' });
      return;
    }
    const requested = Array.isArray(payload.collections) ? payload.collections : COLLECTIONS;
    const granted = requested.filter((name) => COLLECTIONS.includes(name));
    if (granted.length === 0) {
      reply({ success: false, message: 'Unauthorized to receive any collection' });
      return;
    }
    socket.join(granted);
    reply({ success: true, collections: granted });
  });
});

app.post('/api/v3/:collection', express.json({ limit: '50mb' }), (req, res) => {
  const collection = req.params.collection;
  if (!COLLECTIONS.includes(collection)) {
    res.status(404).json({ status: 404, message: 'Bad operation or collection' });
    return;
  }
  if (req.get('authorization') !== `Bearer ${accessToken}`) {
    res.status(401).json({ status: 401, message: 'Missing or bad access token or JWT' });
    return;
  }
  const doc = req.body;
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    res.status(400).json({ status: 400, message: 'Bad or missing request body' });
    return;
  }

  const modified = nextModified(collection);
  doc.identifier = typeof doc.identifier === 'string' ? doc.identifier : crypto.randomUUID();
  doc.srvCreated = modified;
  doc.srvModified = modified;
  doc.subject = 'bench';

  storage.to(collection).emit('create', { colName: collection, doc });
  res.status(201).json({ status: 201, identifier: doc.identifier, lastModified: modified });
});

const port = Number(process.env.PORT || 0);
const hostname = process.env.HOSTNAME || '127.0.0.1';
server.listen(port, hostname, () => {
  const address = server.address();
  console.error(`listening on http://${address.address}:${address.port}`);
});

function stop(signal) {
  console.error(`${signal} received; stopping`);
  io.close();
  server.close(() => process.exit(0));
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

// Helpers shared by the Node clients that the Rust end-to-end tests run:
// environment inputs, Socket.IO connections with either client generation,
// acknowledgements and events with timeouts, and APIv3 REST calls.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { io as ioV4 } from 'socket.io-client';

const require = createRequire(import.meta.url);
// socket.io-client 2.2.0 speaks Engine.IO v3, like the sample page in examples/
// and the Socket.IO Java client 2.x that AndroidAPS uses.
const ioV2 = require('socket.io-client-v2');

/** How long to wait for a connection, an acknowledgement or an event, in milliseconds. */
export const WAIT_MS = 5000;

/** How long to keep listening before asserting that an event did not arrive, in milliseconds. */
export const SETTLE_MS = 500;

/** The six APIv3 collections. */
export const ALL_COLLECTIONS = ['devicestatus', 'entries', 'food', 'profile', 'settings', 'treatments'];

/** Returns the environment variable `name`, or exits with a message when it is missing. */
export function requireEnv(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
}

/** Returns the Socket.IO client generation to use: "4" or "2", from SOCKET_IO_CLIENT. */
export function clientVersion() {
  const version = requireEnv('SOCKET_IO_CLIENT');
  if (version !== '4' && version !== '2') {
    console.error(`invalid SOCKET_IO_CLIENT ${JSON.stringify(version)}: expected "4" or "2"`);
    process.exit(2);
  }
  return version;
}

/** Returns the edge base URL from NIGHTJAR_URL, without a trailing slash. */
export function edgeUrl() {
  return requireEnv('NIGHTJAR_URL').replace(/\/+$/, '');
}

/** Formats a value for a failure message. */
export function show(value) {
  if (value === undefined) {
    return 'undefined';
  }
  return JSON.stringify(value);
}

/** Rejects after `ms` milliseconds with `message`, unless `promise` settles first. */
export function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A socket connected to the /storage namespace that records every storage event.
 *
 * `events` lists the `create`, `update` and `delete` events in arrival order as
 * `{event, data}`.
 */
export class StorageSocket {
  constructor(socket, label) {
    this.socket = socket;
    this.label = label;
    this.events = [];
    this.waiters = [];
    for (const event of ['create', 'update', 'delete']) {
      socket.on(event, (data) => this.record(event, data));
    }
  }

  record(event, data) {
    const entry = { event, data };
    this.events.push(entry);
    for (const waiter of [...this.waiters]) {
      if (waiter.matches(entry)) {
        waiter.resolve(entry);
      }
    }
  }

  /**
   * Emits `subscribe` with `args` (the payload, or nothing) and returns the acknowledgement.
   */
  subscribe(...args) {
    const ack = new Promise((resolve) => {
      this.socket.emit('subscribe', ...args, (response) => resolve(response));
    });
    return withTimeout(ack, WAIT_MS, `${this.label}: no acknowledgement of subscribe ${show(args[0])} within ${WAIT_MS} ms`);
  }

  /** Returns the first recorded event for which `matches` is true, waiting for it if needed. */
  waitFor(description, matches) {
    const seen = this.events.find(matches);
    if (seen) {
      return Promise.resolve(seen);
    }
    let waiter;
    const arrival = new Promise((resolve) => {
      waiter = { matches, resolve };
      this.waiters.push(waiter);
    });
    const message = () =>
      `${this.label}: no ${description} within ${WAIT_MS} ms (connected: ${this.socket.connected}); ` +
      `events received: ${show(this.events)}`;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(message())), WAIT_MS);
    });
    return Promise.race([arrival, timeout]).finally(() => {
      clearTimeout(timer);
      this.waiters = this.waiters.filter((w) => w !== waiter);
    });
  }

  /** Waits for the `event` of collection `colName` about document `identifier`. */
  waitForDocument(event, colName, identifier) {
    return this.waitFor(`${event} event for ${colName}/${identifier}`, (entry) =>
      entry.event === event && entry.data?.colName === colName && documentIdentifier(entry) === identifier,
    );
  }

  /** Returns the recorded events about document `identifier`, in arrival order. */
  eventsAbout(identifier) {
    return this.events.filter((entry) => documentIdentifier(entry) === identifier);
  }

  get connected() {
    return this.socket.connected;
  }

  close() {
    this.socket.close();
  }
}

/** Returns the identifier an event is about: `doc.identifier`, or `identifier` for deletes. */
function documentIdentifier(entry) {
  if (entry.event === 'delete') {
    return entry.data?.identifier;
  }
  return entry.data?.doc?.identifier;
}

/**
 * Connects to the /storage namespace of `baseUrl` with client generation `version`.
 *
 * `transports` restricts the Engine.IO transports (default: polling, then upgrade to WebSocket).
 */
export async function connectStorage(baseUrl, version, label, transports) {
  const options = { forceNew: true, reconnection: false, timeout: WAIT_MS };
  if (transports) {
    options.transports = transports;
    options.upgrade = transports.includes('websocket');
  }
  const url = `${baseUrl}/storage`;
  const socket = version === '2' ? ioV2(url, options) : ioV4(url, options);
  const name = `${label} (socket.io-client ${version === '2' ? '2.2.0' : '4.x'})`;

  const connected = new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', (error) => reject(new Error(`${name}: connect to ${url} failed: ${error?.message ?? error}`)));
    socket.once('error', (error) => reject(new Error(`${name}: socket error on ${url}: ${error?.message ?? error}`)));
  });
  try {
    await withTimeout(connected, WAIT_MS, `${name}: not connected to ${url} within ${WAIT_MS} ms`);
  } catch (error) {
    socket.close();
    throw error;
  }
  return new StorageSocket(socket, name);
}

/** Asserts that a subscribe acknowledgement is a failure with `message`. */
export function assertRejected(ack, message, context) {
  assert.ok(ack && typeof ack === 'object', `${context}: acknowledgement is not an object: ${show(ack)}`);
  assert.equal(ack.success, false, `${context}: expected success false, got ${show(ack)}`);
  assert.equal(ack.message, message, `${context}: unexpected message in ${show(ack)}`);
}

/** Asserts that a subscribe acknowledgement is a success granting exactly `collections` (in any order). */
export function assertGranted(ack, collections, context) {
  assert.ok(ack && typeof ack === 'object', `${context}: acknowledgement is not an object: ${show(ack)}`);
  assert.equal(ack.success, true, `${context}: expected success true, got ${show(ack)}`);
  assert.ok(Array.isArray(ack.collections), `${context}: collections is not an array in ${show(ack)}`);
  assert.deepEqual([...ack.collections].sort(), [...collections].sort(), `${context}: granted collections in ${show(ack)}`);
}

/** Exchanges an access token for a JWT through GET /api/v2/authorization/request/{accessToken}. */
export async function requestJwt(baseUrl, accessToken) {
  const url = `${baseUrl}/api/v2/authorization/request/${encodeURIComponent(accessToken)}`;
  const response = await fetch(url);
  const text = await response.text();
  assert.equal(response.status, 200, `GET /api/v2/authorization/request/<token> returned ${response.status}: ${text}`);
  const body = JSON.parse(text);
  assert.equal(typeof body.token, 'string', `JWT response has no token string: ${text}`);
  return body.token;
}

/**
 * Sends an APIv3 request and returns `{status, body}`, failing unless the status is `expectedStatus`.
 *
 * `path` is relative to /api/v3, such as `/entries` or `/entries/ID?permanent=true`.
 */
export async function apiV3(baseUrl, jwt, method, path, body, expectedStatus) {
  const headers = { Authorization: `Bearer ${jwt}` };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(`${baseUrl}/api/v3${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = text;
  }
  assert.equal(
    response.status,
    expectedStatus,
    `${method} /api/v3${path} with ${show(body)} returned ${response.status}, expected ${expectedStatus}: ${text}`,
  );
  return { status: response.status, body: parsed };
}

/**
 * Runs the named scenarios in order, printing each result, and exits 1 after the
 * first failure or 0 when all pass.
 */
export async function runScenarios(title, scenarios) {
  let passed = 0;
  for (const [name, scenario] of scenarios) {
    try {
      await scenario();
      passed += 1;
      console.log(`ok - ${title}: ${name}`);
    } catch (error) {
      console.error(`FAILED - ${title}: ${name}`);
      console.error(error?.stack ?? String(error));
      process.exit(1);
    }
  }
  console.log(`${title}: ${passed} scenarios passed`);
  // Socket.IO 2.x timers can keep the event loop alive after close.
  process.exit(0);
}

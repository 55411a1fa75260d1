// Drives examples/storage-sample.html in headless Chromium: opens it from a
// file:// URL, subscribes with an access token, creates an entry through REST,
// and checks that the page's log shows the subscription and the new entry.
//
// Environment:
//   NIGHTJAR_URL      edge base URL, such as http://127.0.0.1:40123
//   ADMIN_TOKEN       access token of a subject with role admin
//   SCREENSHOT_PATH   where to save a screenshot of the page (default: a file in the temp directory)
//   CHROMIUM_PATH     Chromium executable (default /usr/bin/chromium)

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { apiV3, edgeUrl, requestJwt, requireEnv, runScenarios, show } from './lib.mjs';

const url = edgeUrl();
const adminToken = requireEnv('ADMIN_TOKEN');
const screenshotPath = process.env.SCREENSHOT_PATH || path.join(tmpdir(), `nightjar-sample-page-${process.pid}.png`);
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const examples = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../examples');
const samplePage = path.join(examples, 'storage-sample.html');

// The background-networking flags stop Chromium from contacting Google's
// services, which fails on machines without Internet access.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const WAIT_MS = 10_000;

/** Returns the text of every line of the page's log. */
function logLines(page) {
  return page.locator('#log li').allTextContents();
}

/** Waits until a log line contains one of `needles`, and returns that line. */
async function waitForLogLine(page, needles, description) {
  try {
    const handle = await page.waitForFunction(
      (texts) => [...document.querySelectorAll('#log li')].map((li) => li.textContent).find((line) => texts.some((text) => line.includes(text))),
      needles,
      { timeout: WAIT_MS },
    );
    return await handle.jsonValue();
  } catch (error) {
    throw new Error(`page log shows no ${description} within ${WAIT_MS} ms; log: ${show(await logLines(page))}`, { cause: error });
  }
}

async function checkSamplePage() {
  assert.ok(existsSync(chromiumPath), `Chromium not found at ${chromiumPath}: run bash tests/run.sh, which installs it`);
  const bundle = path.join(examples, 'node_modules/socket.io-client/dist/socket.io.js');
  assert.ok(existsSync(bundle), `${bundle} is missing: run bash tests/run.sh, which runs npm ci in examples/`);

  const userDataDir = await mkdtemp(path.join(tmpdir(), 'nightjar-chromium-'));
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  const page = browser.pages()[0] ?? (await browser.newPage());
  const consoleMessages = [];
  page.on('console', (message) => consoleMessages.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => consoleMessages.push(`page error: ${error.message}`));

  try {
    await page.goto(pathToFileURL(samplePage).href);
    const loaded = await page.evaluate(() => typeof window.io === 'function');
    assert.ok(loaded, `the page did not load the socket.io client from ${bundle}; console: ${show(consoleMessages)}`);

    await page.fill('#server-url', url);
    await page.fill('#access-token', adminToken);
    await page.click('#subscribe');

    const outcome = await waitForLogLine(page, ['subscribed to collections', 'subscription failed', 'connection failed'], 'subscription result');
    assert.ok(
      outcome.includes('subscribed to collections') && outcome.includes('"entries"'),
      `the page did not subscribe to entries: ${outcome}; log: ${show(await logLines(page))}; console: ${show(consoleMessages)}`,
    );

    const jwt = await requestJwt(url, adminToken);
    const entry = { type: 'sgv', sgv: 111, date: Date.now(), device: `nightjar-sample-page-${process.pid}`, app: 'nightjar-e2e' };
    const created = await apiV3(url, jwt, 'POST', '/entries', entry, 201);
    const identifier = created.body?.identifier;
    assert.equal(typeof identifier, 'string', `POST /api/v3/entries returned no identifier: ${show(created.body)}`);

    const line = await waitForLogLine(page, [identifier], `line with the created entry ${identifier}`);
    assert.ok(line.includes('entries: created document'), `the line with ${identifier} is not a create event: ${line}`);
  } catch (error) {
    console.error(`console messages of the page: ${show(consoleMessages)}`);
    throw error;
  } finally {
    await page.screenshot({ path: screenshotPath, fullPage: true }).catch((error) => console.error(`screenshot failed: ${error.message}`));
    console.log(`screenshot of the sample page: ${screenshotPath}`);
    await browser.close();
    await rm(userDataDir, { recursive: true, force: true });
  }
}

await runScenarios('sample page', [['page shows subscription and created entry', checkSamplePage]]);
